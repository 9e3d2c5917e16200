"""household compositions sent by the RRS

Revision ID: 0002
Revises: 0001
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "households",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("members", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("household_id"),
    )
    op.create_table(
        "household_members",
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("resident_code"),
    )
    op.create_index("ix_household_members_household_id", "household_members", ["household_id"])


def downgrade() -> None:
    op.drop_table("household_members")
    op.drop_table("households")
