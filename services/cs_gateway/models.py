"""Tables of one CS: the municipality's 本人確認情報 with history, held changes,
version gaps, outbox, refusals (and consumer offsets for its inbox topic)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, Text, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.recovery_models import declare_recovery_tables
from services.common.tier_models import declare_tier_tables, identity_tables


class CsBase(DeclarativeBase):
    """This service's own metadata."""


_tables = declare_tier_tables(CsBase)
Identity = _tables["Identity"]
Outbox = _tables["Outbox"]
Refusal = _tables["Refusal"]
TABLES = identity_tables(_tables)
ConsumerOffset = _tables["ConsumerOffset"]
DeadLetter = _tables["DeadLetter"]
MessageReceipt = _tables["MessageReceipt"]
RECOVERY = declare_recovery_tables(CsBase, sends_snapshots=True)  # snapshots and reconciliation



class HouseholdRow(CsBase):
    """The latest composition of a household, as the municipality's RRS sent it."""

    __tablename__ = "households"
    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    members: Mapped[str] = mapped_column(Text)  # HouseholdComposition JSON
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HouseholdMemberRow(CsBase):
    __tablename__ = "household_members"
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)


class NoticeRow(CsBase):
    """A message another municipality's CS sent here, kept in arrival order for the RRS to pull."""

    __tablename__ = "notices"
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    message_key: Mapped[str] = mapped_column(String(100), unique=True)  # a redelivered message is kept once
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    payload: Mapped[str] = mapped_column(Text)  # the CsInboxMessage JSON
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    traceparent: Mapped[str | None] = mapped_column(String(55))  # the trace it arrived in, which the register's work on it continues


class MoveCertificateRow(CsBase):
    """転出証明書情報 received for a person moving here: pending until used by a 転入 or withdrawn."""

    __tablename__ = "move_certificates"
    certificate_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    origin_municipality_code: Mapped[str] = mapped_column(String(6))
    version: Mapped[int] = mapped_column(Integer)  # the 転出 version the 転入 continues from
    status: Mapped[str] = mapped_column(String(16))  # pending | used | withdrawn
    payload: Mapped[str] = mapped_column(Text)  # the MoveOutCertificate JSON
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OnlineFilingRow(CsBase):
    """An online filing received by this municipality, and where it stands (the resident follows it here)."""

    __tablename__ = "online_filings"
    filing_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # the signed nonce
    kind: Mapped[str] = mapped_column(String(40))
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    serial: Mapped[str] = mapped_column(String(49))
    state: Mapped[str] = mapped_column(String(24), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    next_step: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    assurance_recorded: Mapped[bool] = mapped_column(Boolean, default=False)


class SupportMeasureRow(CsBase):
    """A DV support measure this municipality carries, as its register sent it: for 広域交付 answers,
    the online pre-fill and the protection marker sent upward."""

    __tablename__ = "support_measures"
    measure_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)  # the SupportMeasure JSON
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class SupportMeasurePersonRow(CsBase):
    __tablename__ = "support_measure_persons"
    measure_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True, index=True)
