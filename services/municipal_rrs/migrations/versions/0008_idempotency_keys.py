"""Idempotency-Key: each key of each caller and the first answer, kept a day (services/common/idempotency.py)

Revision ID: 0008
Revises: 0007
"""
from typing import Sequence, Union

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    from services.common import idempotency_migration

    idempotency_migration.upgrade()


def downgrade() -> None:
    from services.common import idempotency_migration

    idempotency_migration.downgrade()
