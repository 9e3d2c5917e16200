"""Tables of snapshots and reconciliation, declared on each service's own metadata.

- every network tier: ``reconciliations`` and ``reconciliation_findings`` —
  each comparison with the tier below and every person it found different,
  with what was done (the operator's view of what healed itself);
- a CS: ``snapshots_sent`` — the snapshots it took and sent upward;
- prefecture and national servers: ``snapshots_received`` and
  ``snapshot_rows`` (the latest snapshot of each municipality, one row per
  person), and ``recovery_exports`` (every restore a municipality asked for).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ReconciliationMixin:
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    copy_node: Mapped[str] = mapped_column(String(100))
    truth_node: Mapped[str] = mapped_column(String(100), index=True)
    area: Mapped[str] = mapped_column(Text)  # municipality codes, comma-separated
    trigger: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    ranges_compared: Mapped[int] = mapped_column(Integer, default=0)
    ranges_descended: Mapped[int] = mapped_column(Integer, default=0)
    persons_compared: Mapped[int] = mapped_column(Integer, default=0)
    differing: Mapped[int] = mapped_column(Integer, default=0)
    healed: Mapped[int] = mapped_column(Integer, default=0)
    reported: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    bytes_exchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    outcome: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)


class FindingMixin:
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    reconciliation_id: Mapped[int] = mapped_column(BigInteger, index=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    copy_version: Mapped[int | None] = mapped_column(Integer)
    truth_version: Mapped[int | None] = mapped_column(Integer)
    copy_state: Mapped[str | None] = mapped_column(String(200))
    truth_state: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))
    applied: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SnapshotSentMixin:
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    destination: Mapped[str] = mapped_column(String(100))
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    persons: Mapped[int] = mapped_column(Integer, default=0)
    digest: Mapped[str | None] = mapped_column(String(40))
    ranges_sent: Mapped[int] = mapped_column(Integer, default=0)
    rows_sent: Mapped[int] = mapped_column(Integer, default=0)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    sealed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16))  # sending | complete | mismatch | failed
    detail: Mapped[str | None] = mapped_column(Text)


class SnapshotReceivedMixin:
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    municipality_code: Mapped[str] = mapped_column(String(6), index=True)
    source: Mapped[str] = mapped_column(String(100))  # the CS party that sent it
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sealed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    persons: Mapped[int] = mapped_column(Integer, default=0)
    digest: Mapped[str | None] = mapped_column(String(40))
    ranges_received: Mapped[int] = mapped_column(Integer, default=0)
    rows_received: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))  # receiving | complete | mismatch


class SnapshotRowMixin:
    """The latest snapshot of a municipality: one row per person, replaced range by range."""

    municipality_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)  # the IdentityChange of that version
    snapshot_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class RecoveryExportMixin:
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    municipality_code: Mapped[str] = mapped_column(String(6), index=True)
    requested_by: Mapped[str] = mapped_column(String(100))
    token_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    persons: Mapped[int] = mapped_column(Integer, default=0)


def declare_recovery_tables(base: type[DeclarativeBase], *, sends_snapshots: bool) -> dict[str, type]:
    """Declare the tables of this section on ``base``: a CS sends snapshots, the tiers above receive them."""
    specs = {"Reconciliation": ("reconciliations", ReconciliationMixin), "ReconciliationFinding": ("reconciliation_findings", FindingMixin)}
    if sends_snapshots:
        specs["SnapshotSent"] = ("snapshots_sent", SnapshotSentMixin)
    else:
        specs |= {
            "SnapshotReceived": ("snapshots_received", SnapshotReceivedMixin),
            "SnapshotRow": ("snapshot_rows", SnapshotRowMixin),
            "RecoveryExport": ("recovery_exports", RecoveryExportMixin),
        }
    return {name: type(name, (base, mixin), {"__tablename__": table}) for name, (table, mixin) in specs.items()}
