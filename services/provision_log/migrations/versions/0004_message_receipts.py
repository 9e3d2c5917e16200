"""the id of every signed Kafka record taken, so a replay changes nothing

Revision ID: 0004
Revises: 0003
"""
from typing import Sequence, Union

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    from services.common import receipts_migration

    receipts_migration.upgrade()


def downgrade() -> None:
    from services.common import receipts_migration

    receipts_migration.downgrade()
