"""DV support measures, certificate requests, non-residents and seal registrations

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
        "support_measures",
        sa.Column("measure_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("victim_code", sa.String(length=11), nullable=False),
        sa.Column("own", sa.Boolean(), nullable=False),
        sa.Column("home_municipality_code", sa.String(length=6), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("previous_municipality_code", sa.String(length=6), nullable=True),
        sa.Column("received_from", sa.String(length=6), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("measure_id"),
    )
    op.create_index("ix_support_measures_status", "support_measures", ["status"])
    op.create_index("ix_support_measures_victim_code", "support_measures", ["victim_code"])
    op.create_index("ix_support_measures_own", "support_measures", ["own"])
    op.create_table(
        "support_measure_persons",
        sa.Column("measure_id", sa.Uuid(), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.ForeignKeyConstraint(["measure_id"], ["support_measures.measure_id"]),
        sa.PrimaryKeyConstraint("measure_id", "resident_code"),
    )
    op.create_index("ix_support_measure_persons_resident_code", "support_measure_persons", ["resident_code"])
    op.create_table(
        "support_measure_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("measure_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("target_municipality_code", sa.String(length=6), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("staff_acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("staff_acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_support_measure_deliveries_measure_id", "support_measure_deliveries", ["measure_id"])
    op.create_index("ix_support_measure_deliveries_state", "support_measure_deliveries", ["state"])
    op.create_index("ix_support_measure_deliveries_next_attempt_at", "support_measure_deliveries", ["next_attempt_at"])
    op.create_table(
        "support_measure_alerts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("measure_id", sa.Uuid(), nullable=True),
        sa.Column("delivery_id", sa.Uuid(), nullable=True),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index("ix_support_measure_alerts_kind", "support_measure_alerts", ["kind"])
    op.create_index("ix_support_measure_alerts_measure_id", "support_measure_alerts", ["measure_id"])
    op.create_index("ix_support_measure_alerts_resident_code", "support_measure_alerts", ["resident_code"])
    op.create_table(
        "certificate_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("channel", sa.String(length=24), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("subject_code", sa.String(length=11), nullable=True),
        sa.Column("requester", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("measure_ids", sa.Text(), nullable=False),
        sa.Column("requesting_municipality_code", sa.String(length=6), nullable=True),
        sa.Column("handled_by", sa.String(length=100), nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("document", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_certificate_requests_subject_code", "certificate_requests", ["subject_code"])
    op.create_index("ix_certificate_requests_state", "certificate_requests", ["state"])


def downgrade() -> None:
    op.drop_table("certificate_requests")
    op.drop_table("support_measure_alerts")
    op.drop_table("support_measure_deliveries")
    op.drop_table("support_measure_persons")
    op.drop_table("support_measures")
