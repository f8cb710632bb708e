"""jobs store the version of their spec

Revision ID: 3b8e51c0d7a2
Revises: 7c1d2e9a4b60
Create Date: 2026-12-03 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '3b8e51c0d7a2'
down_revision = '7c1d2e9a4b60'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows stored before the spec had a version hold version 1.
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spec_version', sa.Integer(), server_default='1',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('spec_version')
