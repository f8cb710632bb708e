"""attempts record the settings they trained with

Revision ID: 9d4f2a6c8e13
Revises: 3b8e51c0d7a2
Create Date: 2026-12-04 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '9d4f2a6c8e13'
down_revision = '3b8e51c0d7a2'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Attempts made before this revision have none recorded: they ran the spec's settings.
    with op.batch_alter_table('job_attempt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settings', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job_attempt', schema=None) as batch_op:
        batch_op.drop_column('settings')
