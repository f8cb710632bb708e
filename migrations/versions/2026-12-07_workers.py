"""the worker registry: each worker's offer, state and heartbeat

Revision ID: 7b3f0c2e9a41
Revises: dd92a1c8500c
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models


revision = '7b3f0c2e9a41'
down_revision = 'dd92a1c8500c'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('worker',
    sa.Column('id', sa.String(length=300), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('gpu_type', sa.String(length=40), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('gpu_memory_bytes', sa.BigInteger(), nullable=True),
    sa.Column('queues', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=True),
    sa.Column('started_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_worker'))
    )
    with op.batch_alter_table('worker', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_worker_heartbeat_at'), ['heartbeat_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('worker', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_worker_heartbeat_at'))
    op.drop_table('worker')
