"""push-type provision: follows and notifications

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
        "follows",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agency_id", sa.String(length=40), nullable=False),
        sa.Column("affair", sa.String(length=40), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("until", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_follows_resident_code", "follows", ["resident_code"])
    op.create_index("one_active_follow", "follows", ["agency_id", "affair", "resident_code"], unique=True, postgresql_where=sa.text("stopped_at IS NULL"))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("follow_id", sa.Uuid(), nullable=False),
        sa.Column("agency_id", sa.String(length=40), nullable=False),
        sa.Column("affair", sa.String(length=40), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("change_event_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("corrects", sa.Uuid(), nullable=True),
        sa.Column("change", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sequence"),
    )
    op.create_index("ix_notifications_follow_id", "notifications", ["follow_id"])
    op.create_index("ix_notifications_status", "notifications", ["status"])
    op.create_index("ix_notifications_due_at", "notifications", ["due_at"])
    op.create_index("notifications_feed", "notifications", ["agency_id", "sequence"])
    op.execute("create sequence notification_feed_seq")


def downgrade() -> None:
    op.execute("drop sequence notification_feed_seq")
    op.drop_table("notifications")
    op.drop_table("follows")
