"""Tables of the provision log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, LargeBinary, SmallInteger, String, Text, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.kafka import ConsumerOffsetMixin, DeadLetterMixin, MessageReceiptMixin
from services.common.runtime import RefusalMixin


class ProvisionLogBase(DeclarativeBase):
    """This service's own metadata."""


class ProvisionEntry(ProvisionLogBase):
    """One provision record as received; the record id makes redelivery harmless."""

    __tablename__ = "provision_records"
    record_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    provided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    provider: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(40), index=True)
    affair: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LogLeaf(ProvisionLogBase):
    """One leaf of the Merkle tree: the exact entry text and its hash.

    ``record_id`` (a provision record, an incident or an erasure) is unique, so a
    record delivered twice is appended once. When an entry expires its text, salt
    and resident code are erased; the hash stays, so every proof still verifies,
    and an erasure leaf names the erased leaves. ``resident_code`` is the
    resident index: the resident's view finds their leaves by it, and checks each
    against the tag the leaf commits to.
    """

    __tablename__ = "log_leaves"
    __table_args__ = (
        Index("ix_log_leaves_incidents", "leaf_index", postgresql_where=text("kind = 'incident'")),
        Index("ix_log_leaves_erasures", "leaf_index", postgresql_where=text("kind = 'erasure'")),
    )
    leaf_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    record_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    entry: Mapped[str | None] = mapped_column(Text)
    resident_code: Mapped[str | None] = mapped_column(String(11), index=True)
    salt: Mapped[bytes | None] = mapped_column(LargeBinary)
    entry_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)  # provided_at / reported_at: retention counts from it
    appended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LogNode(ProvisionLogBase):
    """Hash of the complete subtree ``(level, idx)``: leaves [idx·2^level, (idx+1)·2^level)."""

    __tablename__ = "log_nodes"
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogState(ProvisionLogBase):
    """The one row holding the tree size; appends lock it, so they are serial."""

    __tablename__ = "log_state"
    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


class SignedCheckpoint(ProvisionLogBase):
    __tablename__ = "checkpoints"
    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    note: Mapped[str] = mapped_column(Text)


class Incident(ProvisionLogBase):
    """An incident recorded by an operator (R-LOG-2), disclosed to the residents concerned."""

    __tablename__ = "incidents"
    incident_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reporter: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    explanation: Mapped[str] = mapped_column(Text)


class IncidentRecord(ProvisionLogBase):
    __tablename__ = "incident_records"
    incident_id: Mapped[str] = mapped_column(String(36), ForeignKey("incidents.incident_id"), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)


class ConsumerOffset(ProvisionLogBase, ConsumerOffsetMixin):
    __tablename__ = "consumer_offsets"


class DeadLetter(ProvisionLogBase, DeadLetterMixin):
    __tablename__ = "dead_letters"


class MessageReceipt(ProvisionLogBase, MessageReceiptMixin):
    __tablename__ = "message_receipts"


class Refusal(ProvisionLogBase, RefusalMixin):
    __tablename__ = "refusals"
