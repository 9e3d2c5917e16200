"""Tables of one municipality's resident register."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String, Text, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.outbox import OutboxMixin
from services.common.runtime import RefusalMixin


class RrsBase(DeclarativeBase):
    """This service's own metadata: its tables live only in its own database."""


class Household(RrsBase):
    __tablename__ = "households"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ResidentRow(RrsBase):
    __tablename__ = "residents"
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    individual_number: Mapped[str] = mapped_column(String(12), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    municipality_code: Mapped[str] = mapped_column(String(6))
    family_name: Mapped[str] = mapped_column(String(60), index=True)
    given_name: Mapped[str | None] = mapped_column(String(60), index=True)
    family_name_kana: Mapped[str | None] = mapped_column(String(120), index=True)
    given_name_kana: Mapped[str | None] = mapped_column(String(120))
    former_surname: Mapped[str | None] = mapped_column(String(60))
    former_surname_kana: Mapped[str | None] = mapped_column(String(120))
    alias: Mapped[str | None] = mapped_column(String(60))
    birth_date: Mapped[date] = mapped_column(Date, index=True)
    sex: Mapped[str] = mapped_column(String(8))
    postal_code: Mapped[str | None] = mapped_column(String(7))
    address_text: Mapped[str] = mapped_column(String(200))
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), index=True)
    relationship: Mapped[str] = mapped_column(String(16))
    became_resident_on: Mapped[date] = mapped_column(Date)
    previous_address: Mapped[str | None] = mapped_column(String(200))
    honseki: Mapped[str | None] = mapped_column(String(200))
    hittousha: Mapped[str | None] = mapped_column(String(60))
    nationality: Mapped[str | None] = mapped_column(String(60))
    residence_status: Mapped[str | None] = mapped_column(String(60))
    period_of_stay: Mapped[str | None] = mapped_column(String(60))
    period_of_stay_ends: Mapped[date | None] = mapped_column(Date)
    residence_card_number: Mapped[str | None] = mapped_column(String(12))
    special_permanent_resident: Mapped[bool] = mapped_column(Boolean, default=False)
    last_change: Mapped[str] = mapped_column(String(32))
    last_change_date: Mapped[date] = mapped_column(Date)
    pending_move: Mapped[str | None] = mapped_column(Text)  # MoveDetails JSON while 転出予定
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class ResidentHistoryRow(RrsBase):
    """Every change of every record, never overwritten: the record as it stood after the change."""

    __tablename__ = "resident_history"
    resident_code: Mapped[str] = mapped_column(ForeignKey("residents.resident_code"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    change_date: Mapped[date] = mapped_column(Date)
    notified_date: Mapped[date | None] = mapped_column(Date)
    explanation: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    recorded_by: Mapped[str] = mapped_column(String(100))
    record: Mapped[str] = mapped_column(Text)  # ResidentRecord JSON after the change


class Outbox(RrsBase, OutboxMixin):
    __tablename__ = "outbox"


class Refusal(RrsBase, RefusalMixin):
    __tablename__ = "refusals"


class MoveReservationRow(RrsBase):
    """転入予約: 転出証明書情報 another municipality sent for a person moving here."""

    __tablename__ = "move_reservations"
    certificate_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    procedure_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    origin_municipality_code: Mapped[str] = mapped_column(String(6))
    planned_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # pending | used | withdrawn
    payload: Mapped[str] = mapped_column(Text)  # MoveOutCertificate JSON
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IncomingNoticeRow(RrsBase):
    """What another municipality sent through the CS, pulled in the CS's order; staff acknowledge them."""

    __tablename__ = "incoming_notices"
    cs_sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(40))
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    summary: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MoveInReviewRow(RrsBase):
    """A 転入届 without matching 転出証明書情報, kept for staff instead of being registered."""

    __tablename__ = "move_in_reviews"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    resident_codes: Mapped[str] = mapped_column(Text)  # JSON list
    reason: Mapped[str] = mapped_column(Text)
    filing: Mapped[str] = mapped_column(Text)
    filed_by: Mapped[str] = mapped_column(String(100))
    filed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    state: Mapped[str] = mapped_column(String(16), default="open")


class OnlineFilingRow(RrsBase):
    """An online filing handed over by the CS (verified signature), and how far it got."""

    __tablename__ = "online_filings"
    filing_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    filer: Mapped[str] = mapped_column(String(11), index=True)
    serial: Mapped[str] = mapped_column(String(49))
    content: Mapped[str] = mapped_column(Text)  # the signed OnlineFilingContent JSON
    state: Mapped[str] = mapped_column(String(24), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    code_hash: Mapped[str | None] = mapped_column(String(64))  # of the one-time code mailed to the new address
    code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_by: Mapped[str | None] = mapped_column(String(100))


class LetterRow(RrsBase):
    """Post the municipality sends (e.g. a residence-confirmation code to a new address), for the mail room."""

    __tablename__ = "letters"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    address_text: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
