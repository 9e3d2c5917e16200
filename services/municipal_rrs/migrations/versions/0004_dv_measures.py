"""DV support measures, certificate requests, non-residents and seal registrations

Revision ID: 0004
Revises: 0003
"""
from typing import Sequence, Union

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass  # reserved: filled in by the change that needs it


def downgrade() -> None:
    pass
