"""moves between municipalities: pending 転出, 転入予約, notices from other municipalities, move-in reviews

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
    op.add_column("residents", sa.Column("pending_move", sa.Text(), nullable=True))
    op.create_table(
        "move_reservations",
        sa.Column("certificate_id", sa.Uuid(), nullable=False),
        sa.Column("procedure_id", sa.Uuid(), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("origin_municipality_code", sa.String(length=6), nullable=False),
        sa.Column("planned_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("certificate_id"),
    )
    op.create_index("ix_move_reservations_procedure_id", "move_reservations", ["procedure_id"])
    op.create_index("ix_move_reservations_resident_code", "move_reservations", ["resident_code"])
    op.create_table(
        "incoming_notices",
        sa.Column("cs_sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("cs_sequence"),
    )
    op.create_index("ix_incoming_notices_resident_code", "incoming_notices", ["resident_code"])
    op.create_table(
        "move_in_reviews",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resident_codes", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("filing", sa.Text(), nullable=False),
        sa.Column("filed_by", sa.String(length=100), nullable=False),
        sa.Column("filed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("move_in_reviews")
    op.drop_table("incoming_notices")
    op.drop_table("move_reservations")
    op.drop_column("residents", "pending_move")
