"""datasets record their layout and the format they were uploaded in

Revision ID: 5c7e9a1b3d24
Revises: 9d4f2a6c8e13
Create Date: 2026-12-05 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '5c7e9a1b3d24'
down_revision = '9d4f2a6c8e13'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Datasets uploaded before were stored as uploaded, and only CoNLL files were recognised.
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source_format', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('layout', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('layout_details', sa.JSON(), nullable=True))
    dataset = sa.table('dataset', sa.column('format', sa.String),
                       sa.column('source_format', sa.String), sa.column('layout', sa.String),
                       sa.column('layout_details', sa.JSON))
    op.execute(dataset.update().values(
        source_format=dataset.c.format,
        layout=sa.case((dataset.c.format == 'conll', 'conll'), else_='tabular'),
        layout_details={}))
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.alter_column('source_format', nullable=False)
        batch_op.alter_column('layout', nullable=False)
        batch_op.alter_column('layout_details', nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.drop_column('layout_details')
        batch_op.drop_column('layout')
        batch_op.drop_column('source_format')
