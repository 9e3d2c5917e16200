"""Idempotency-Key: each key of each caller and the first answer, kept a day (services/common/idempotency.py)

Revision ID: 0010
Revises: 0009
"""
from typing import Sequence, Union

revision: str = "0010"
down_revision: Union[str, Sequence[str], None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    from services.common import idempotency_migration

    idempotency_migration.upgrade()


def downgrade() -> None:
    from services.common import idempotency_migration

    idempotency_migration.downgrade()
