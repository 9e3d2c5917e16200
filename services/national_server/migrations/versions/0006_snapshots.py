"""snapshots and reconciliation

Revision ID: 0006
Revises: 0005
"""
from typing import Sequence, Union

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Reconciliation records and findings; snapshots received, their rows, and recovery exports."""
    from services.common import recovery_migration

    recovery_migration.upgrade(sends_snapshots=False)


def downgrade() -> None:
    from services.common import recovery_migration

    recovery_migration.downgrade(sends_snapshots=False)
