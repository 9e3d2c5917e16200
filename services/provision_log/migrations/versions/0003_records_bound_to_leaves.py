"""Records bound to their leaves (provision/v2), incident leaves found by their entries, erasure leaves

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 21:40:00

The leaf format changes: provision leaves appended from now on are
``provision/v2`` and commit to the salted hash of the whole record. Leaves
already in the tree cannot change (they are signed): they stay
``provision/v1`` and are checked under v1 rules (the fields they carry), and
the resident's view and ``/v1/me/log`` mark them ``leaf_format:
"provision/v1"`` with the record's fields they do not commit to
(``unbound_fields``). No row is rewritten.

The resident's view now finds the incident leaves naming a record in
``log_leaves`` itself (not through ``incident_records``): a partial index keeps
that read to the incident leaves. Leaves erased before this revision get one
erasure leaf naming them, appended by the service when it starts (as records
stored before 0002 were appended).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index('ix_log_leaves_incidents', 'log_leaves', ['leaf_index'], unique=False, postgresql_where=sa.text("kind = 'incident'"))
    op.create_index('ix_log_leaves_erasures', 'log_leaves', ['leaf_index'], unique=False, postgresql_where=sa.text("kind = 'erasure'"))


def downgrade() -> None:
    op.drop_index('ix_log_leaves_erasures', table_name='log_leaves')
    op.drop_index('ix_log_leaves_incidents', table_name='log_leaves')
