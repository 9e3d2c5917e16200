"""The schema of services/common/recovery_models.py, for each service's Alembic revision
(CS 0006, prefecture 0003, national 0006)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def _now():
    return sa.text("now()")


def upgrade(*, sends_snapshots: bool) -> None:
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("copy_node", sa.String(100), nullable=False),
        sa.Column("truth_node", sa.String(100), nullable=False),
        sa.Column("area", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ranges_compared", sa.Integer(), nullable=False),
        sa.Column("ranges_descended", sa.Integer(), nullable=False),
        sa.Column("persons_compared", sa.Integer(), nullable=False),
        sa.Column("differing", sa.Integer(), nullable=False),
        sa.Column("healed", sa.Integer(), nullable=False),
        sa.Column("reported", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("bytes_exchanged", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reconciliations_truth_node", "reconciliations", ["truth_node"])
    op.create_index("ix_reconciliations_finished_at", "reconciliations", ["finished_at"])
    op.create_table(
        "reconciliation_findings",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("reconciliation_id", sa.BigInteger(), nullable=False),
        sa.Column("resident_code", sa.String(11), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("copy_version", sa.Integer(), nullable=True),
        sa.Column("truth_version", sa.Integer(), nullable=True),
        sa.Column("copy_state", sa.String(200), nullable=True),
        sa.Column("truth_state", sa.String(200), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("applied", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("found_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reconciliation_findings_reconciliation_id", "reconciliation_findings", ["reconciliation_id"])
    op.create_index("ix_reconciliation_findings_resident_code", "reconciliation_findings", ["resident_code"])
    if sends_snapshots:
        op.create_table(
            "snapshots_sent",
            sa.Column("id", sa.Uuid(), nullable=False),
            sa.Column("destination", sa.String(100), nullable=False),
            sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("persons", sa.Integer(), nullable=False),
            sa.Column("digest", sa.String(40), nullable=True),
            sa.Column("ranges_sent", sa.Integer(), nullable=False),
            sa.Column("rows_sent", sa.Integer(), nullable=False),
            sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
            sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("detail", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_snapshots_sent_taken_at", "snapshots_sent", ["taken_at"])
        return
    op.create_table(
        "snapshots_received",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("municipality_code", sa.String(6), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("persons", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(40), nullable=True),
        sa.Column("ranges_received", sa.Integer(), nullable=False),
        sa.Column("rows_received", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_snapshots_received_municipality_code", "snapshots_received", ["municipality_code"])
    op.create_table(
        "snapshot_rows",
        sa.Column("municipality_code", sa.String(6), nullable=False),
        sa.Column("resident_code", sa.String(11), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("snapshot_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("municipality_code", "resident_code"),
    )
    op.create_table(
        "recovery_exports",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("municipality_code", sa.String(6), nullable=False),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("persons", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_recovery_exports_municipality_code", "recovery_exports", ["municipality_code"])


def downgrade(*, sends_snapshots: bool) -> None:
    tables = ["snapshots_sent"] if sends_snapshots else ["recovery_exports", "snapshot_rows", "snapshots_received"]
    for table in tables + ["reconciliation_findings", "reconciliations"]:
        op.drop_table(table)
