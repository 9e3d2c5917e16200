"""online filings received by the municipality

Revision ID: 0004
Revises: 0003
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "online_filings",
        sa.Column("filing_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("serial", sa.String(length=49), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("next_step", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assurance_recorded", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("filing_id"),
    )
    op.create_index("ix_online_filings_resident_code", "online_filings", ["resident_code"])
    op.create_index("ix_online_filings_state", "online_filings", ["state"])


def downgrade() -> None:
    op.drop_table("online_filings")
