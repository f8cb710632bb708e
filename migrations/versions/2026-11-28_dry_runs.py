"""dry runs: job specs checked by a worker without running them

Revision ID: 7c1d2e9a4b60
Revises: 442a8f9b6fde
Create Date: 2026-11-28 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models


revision = '7c1d2e9a4b60'
down_revision = '442a8f9b6fde'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dry_run',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('project_id', sa.String(length=40), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('claim_owner', sa.String(length=255), nullable=True),
    sa.Column('claimed_at', app.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_dry_run_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dry_run'))
    )
    with op.batch_alter_table('dry_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dry_run_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_dry_run_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dry_run_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dry_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dry_run_status'))
        batch_op.drop_index(batch_op.f('ix_dry_run_project_id'))
        batch_op.drop_index(batch_op.f('ix_dry_run_created_at'))

    op.drop_table('dry_run')
