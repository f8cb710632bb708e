"""durable jobs: attempts, leases, checkpoints, idempotency keys

Revision ID: 05058a048bf4
Revises: 04c65db01ebe
Create Date: 2026-11-28 11:53:19.363970
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models


revision = '05058a048bf4'
down_revision = '04c65db01ebe'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idempotency_key',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_sha256', sa.String(length=64), nullable=False),
    sa.Column('object_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_key')),
    sa.UniqueConstraint('scope', 'key', name=op.f('uq_idempotency_key_scope'))
    )
    op.create_table('checkpoint',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_checkpoint_job_id_job'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoint')),
    sa.UniqueConstraint('job_id', 'step', name=op.f('uq_checkpoint_job_id'))
    )
    with op.batch_alter_table('checkpoint', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_checkpoint_job_id'), ['job_id'], unique=False)

    op.create_table('job_attempt',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=255), nullable=False),
    sa.Column('started_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', app.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('resumed_from_step', sa.Integer(), nullable=True),
    sa.Column('last_step', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_job_attempt_job_id_job'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_attempt')),
    sa.UniqueConstraint('job_id', 'number', name=op.f('uq_job_attempt_job_id'))
    )
    with op.batch_alter_table('job_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_attempt_job_id'), ['job_id'], unique=False)

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempt', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', app.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('enqueued_at', app.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('runtime_seconds', sa.Float(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_job_lease_expires_at'), ['lease_expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_lease_expires_at'))
        batch_op.drop_column('runtime_seconds')
        batch_op.drop_column('enqueued_at')
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('lease_owner')
        batch_op.drop_column('attempt')

    with op.batch_alter_table('job_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_attempt_job_id'))

    op.drop_table('job_attempt')
    with op.batch_alter_table('checkpoint', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_checkpoint_job_id'))

    op.drop_table('checkpoint')
    op.drop_table('idempotency_key')
