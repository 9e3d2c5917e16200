"""Table declarations shared by the prefecture and national servers (each in its own database)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from services.common.identity_store import HeldChangeMixin, IdentityCurrentMixin, IdentityHistoryMixin, IdentityTables, VersionGapMixin
from services.common.kafka import ConsumerOffsetMixin, DeadLetterMixin, MessageReceiptMixin
from services.common.outbox import OutboxMixin
from services.common.runtime import RefusalMixin


def declare_tier_tables(base: type[DeclarativeBase]) -> dict[str, type]:
    """Declare the identity store, outbox, refusals, consumer offsets and dead letters on ``base``."""
    specs = {
        "Identity": ("identity", IdentityCurrentMixin),
        "IdentityHistory": ("identity_history", IdentityHistoryMixin),
        "HeldChange": ("held_changes", HeldChangeMixin),
        "VersionGap": ("version_gaps", VersionGapMixin),
        "Outbox": ("outbox", OutboxMixin),
        "Refusal": ("refusals", RefusalMixin),
        "ConsumerOffset": ("consumer_offsets", ConsumerOffsetMixin),
        "DeadLetter": ("dead_letters", DeadLetterMixin),
        "MessageReceipt": ("message_receipts", MessageReceiptMixin),
    }
    return {name: type(name, (base, mixin), {"__tablename__": table}) for name, (table, mixin) in specs.items()}


def identity_tables(declared: dict[str, type]) -> IdentityTables:
    return IdentityTables(current=declared["Identity"], history=declared["IdentityHistory"], held=declared["HeldChange"], gaps=declared["VersionGap"])
