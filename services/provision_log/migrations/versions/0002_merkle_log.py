"""Merkle tree log, signed checkpoints, incidents

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 16:00:00

Records stored before this revision are appended to the tree by the service
when it starts (oldest first).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('log_leaves',
    sa.Column('leaf_index', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(), nullable=False),
    sa.Column('entry', sa.Text(), nullable=True),
    sa.Column('resident_code', sa.String(length=11), nullable=True),
    sa.Column('salt', sa.LargeBinary(), nullable=True),
    sa.Column('entry_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('appended_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('leaf_index'),
    sa.UniqueConstraint('record_id')
    )
    op.create_index(op.f('ix_log_leaves_entry_time'), 'log_leaves', ['entry_time'], unique=False)
    op.create_index(op.f('ix_log_leaves_resident_code'), 'log_leaves', ['resident_code'], unique=False)
    op.create_table('log_nodes',
    sa.Column('level', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx')
    )
    log_state = op.create_table('log_state',
    sa.Column('id', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(log_state, [{'id': 1, 'size': 0}])
    op.create_table('checkpoints',
    sa.Column('tree_size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('root_hash', sa.LargeBinary(), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('tree_size')
    )
    op.create_index(op.f('ix_checkpoints_signed_at'), 'checkpoints', ['signed_at'], unique=False)
    op.create_table('incidents',
    sa.Column('incident_id', sa.String(length=36), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reporter', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('explanation', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('incident_id')
    )
    op.create_table('incident_records',
    sa.Column('incident_id', sa.String(length=36), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.incident_id'], ),
    sa.PrimaryKeyConstraint('incident_id', 'record_id')
    )
    op.create_index(op.f('ix_incident_records_record_id'), 'incident_records', ['record_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_incident_records_record_id'), table_name='incident_records')
    op.drop_table('incident_records')
    op.drop_table('incidents')
    op.drop_index(op.f('ix_checkpoints_signed_at'), table_name='checkpoints')
    op.drop_table('checkpoints')
    op.drop_table('log_state')
    op.drop_table('log_nodes')
    op.drop_index(op.f('ix_log_leaves_resident_code'), table_name='log_leaves')
    op.drop_index(op.f('ix_log_leaves_entry_time'), table_name='log_leaves')
    op.drop_table('log_leaves')
