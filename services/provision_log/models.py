"""Tables of the provision log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.kafka import ConsumerOffsetMixin, DeadLetterMixin
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


class ConsumerOffset(ProvisionLogBase, ConsumerOffsetMixin):
    __tablename__ = "consumer_offsets"


class DeadLetter(ProvisionLogBase, DeadLetterMixin):
    __tablename__ = "dead_letters"


class Refusal(ProvisionLogBase, RefusalMixin):
    __tablename__ = "refusals"
