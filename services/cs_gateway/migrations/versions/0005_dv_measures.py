"""DV support measures held by the CS

Revision ID: 0005
Revises: 0004
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "support_measures",
        sa.Column("measure_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("measure_id"),
    )
    op.create_table(
        "support_measure_persons",
        sa.Column("measure_id", sa.Uuid(), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.PrimaryKeyConstraint("measure_id", "resident_code"),
    )
    op.create_index("ix_support_measure_persons_resident_code", "support_measure_persons", ["resident_code"])


def downgrade() -> None:
    op.drop_table("support_measure_persons")
    op.drop_table("support_measures")
