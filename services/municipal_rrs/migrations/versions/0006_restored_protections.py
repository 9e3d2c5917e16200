"""protections restored by the disaster-recovery drill from the network's protection markers

Revision ID: 0006
Revises: 0005
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "restored_protections",
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("marker_as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("restored_from", sa.String(length=100), nullable=False),
        sa.Column("restored_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_by", sa.String(length=100), nullable=True),
        sa.Column("superseded_by_measure", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("resident_code"),
    )


def downgrade() -> None:
    op.drop_table("restored_protections")
