"""projects and API keys: every dataset and job belongs to a project

Revision ID: 442a8f9b6fde
Revises: 05058a048bf4
Create Date: 2026-11-28 18:57:54.036967
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models


revision = '442a8f9b6fde'
down_revision = '05058a048bf4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('project',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project')),
    sa.UniqueConstraint('name', name=op.f('uq_project_name'))
    )
    # What existed before projects belongs to the default project.
    op.execute(sa.text("INSERT INTO project (id, name, created_at) "
                       "VALUES ('proj_default', 'default', CURRENT_TIMESTAMP)"))
    op.create_table('api_key',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=40), nullable=False),
    sa.Column('admin', sa.Boolean(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('created_at', app.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', app.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', app.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_api_key_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_key')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_key_prefix'))
    )
    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_key_project_id'), ['project_id'], unique=False)

    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.String(length=40), nullable=False,
                                      server_default='proj_default'))
        batch_op.create_index(batch_op.f('ix_dataset_project_id'), ['project_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_dataset_project_id_project'), 'project', ['project_id'], ['id'])

    with op.batch_alter_table('idempotency_key', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.String(length=40), nullable=False,
                                      server_default='proj_default'))
        batch_op.drop_constraint(batch_op.f('uq_idempotency_key_scope'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_idempotency_key_project_id'), ['project_id', 'scope', 'key'])
        batch_op.create_foreign_key(batch_op.f('fk_idempotency_key_project_id_project'), 'project', ['project_id'], ['id'])

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.String(length=40), nullable=False,
                                      server_default='proj_default'))
        batch_op.add_column(sa.Column('api_key_id', sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f('ix_job_project_id'), ['project_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_job_api_key_id_api_key'), 'api_key', ['api_key_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_job_project_id_project'), 'project', ['project_id'], ['id'])

    # The default only filled the existing rows: new ones always name their project.
    for table in ('dataset', 'idempotency_key', 'job'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('project_id', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_job_project_id_project'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_job_api_key_id_api_key'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_job_project_id'))
        batch_op.drop_column('api_key_id')
        batch_op.drop_column('project_id')

    with op.batch_alter_table('idempotency_key', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_idempotency_key_project_id_project'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_idempotency_key_project_id'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_idempotency_key_scope'), ['scope', 'key'])
        batch_op.drop_column('project_id')

    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_dataset_project_id_project'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_dataset_project_id'))
        batch_op.drop_column('project_id')

    with op.batch_alter_table('api_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_key_project_id'))

    op.drop_table('api_key')
    op.drop_table('project')
