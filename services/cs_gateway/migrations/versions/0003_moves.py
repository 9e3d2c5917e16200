"""moves between municipalities: notices for the RRS and received move-out certificates

Revision ID: 0003
Revises: 0002
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("sequence", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("message_key", sa.String(length=100), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
        sa.UniqueConstraint("message_key"),
    )
    op.create_index("ix_notices_resident_code", "notices", ["resident_code"])
    op.create_table(
        "move_certificates",
        sa.Column("certificate_id", sa.Uuid(), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("origin_municipality_code", sa.String(length=6), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("certificate_id"),
    )
    op.create_index("ix_move_certificates_resident_code", "move_certificates", ["resident_code"])


def downgrade() -> None:
    op.drop_table("move_certificates")
    op.drop_table("notices")
