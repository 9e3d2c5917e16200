"""The ``message_receipts`` table, the same in every service that consumes Kafka (each its own revision)."""

import sqlalchemy as sa
from alembic import op


def upgrade() -> None:
    """Records taken before this revision carry no message id: nothing to fill in."""
    op.create_table(
        "message_receipts",
        sa.Column("message_id", sa.Uuid(), primary_key=True),
        sa.Column("signer", sa.String(length=200), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_message_receipts_signed_at", "message_receipts", ["signed_at"])


def downgrade() -> None:
    op.drop_table("message_receipts")
