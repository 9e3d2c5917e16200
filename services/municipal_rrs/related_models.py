"""Tables of the related municipal affairs (R-REL-1) and of the staff UI's alert acknowledgements.

They share the register's metadata and database (migration 0005); they live
in their own module so that the register's core tables stay in models.py.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Identity, Index, String, Text, Uuid, func, text
from sqlalchemy.orm import Mapped, mapped_column

from services.municipal_rrs.models import RrsBase


class NonResidentRow(RrsBase):
    """住登外者: a person the municipality manages who is not on its register."""

    __tablename__ = "non_residents"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, Identity(start=1), unique=True)
    family_name: Mapped[str] = mapped_column(String(60), index=True)
    given_name: Mapped[str | None] = mapped_column(String(60))
    family_name_kana: Mapped[str | None] = mapped_column(String(120), index=True)
    given_name_kana: Mapped[str | None] = mapped_column(String(120))
    birth_date: Mapped[date] = mapped_column(Date, index=True)
    sex: Mapped[str | None] = mapped_column(String(8))
    individual_number: Mapped[str | None] = mapped_column(String(12), index=True)
    address_text: Mapped[str] = mapped_column(String(200))
    address_municipality_code: Mapped[str | None] = mapped_column(String(6))
    postal_code: Mapped[str | None] = mapped_column(String(7))
    reason: Mapped[str] = mapped_column(String(24))
    note: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    linked_resident_code: Mapped[str | None] = mapped_column(ForeignKey("residents.resident_code"), index=True)
    linked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    linked_by: Mapped[str | None] = mapped_column(String(100))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    registered_by: Mapped[str] = mapped_column(String(100))


class SealRegistrationRow(RrsBase):
    """印鑑登録: valid only while the holder is on the register (one registered seal per holder)."""

    __tablename__ = "seal_registrations"
    __table_args__ = (
        Index("uq_seal_registrations_one_per_holder", "holder_resident_code", unique=True, postgresql_where=text("status = 'registered'")),
    )
    registration_number: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    holder_resident_code: Mapped[str] = mapped_column(ForeignKey("residents.resident_code"), index=True)
    impression: Mapped[str] = mapped_column(String(60))
    status: Mapped[str] = mapped_column(String(16))
    registered_on: Mapped[date] = mapped_column(Date)
    registered_by: Mapped[str] = mapped_column(String(100))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    ended_on: Mapped[date | None] = mapped_column(Date)
    end_reason: Mapped[str | None] = mapped_column(String(16))
    ended_by: Mapped[str | None] = mapped_column(String(100))
    explanation: Mapped[str | None] = mapped_column(Text)


class AlertAcknowledgementRow(RrsBase):
    """A clerk acknowledged the support-measure alert of a record: who, when, which record, which measure.

    The staff UI refuses issuance unless a row exists for this clerk, this
    login session, this record and every measure in force, made today.
    """

    __tablename__ = "staff_alert_acknowledgements"
    __table_args__ = (Index("ix_staff_alert_ack_lookup", "staff_id", "resident_code", "session_id"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    staff_id: Mapped[str] = mapped_column(String(100))
    session_id: Mapped[str] = mapped_column(String(64))
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    measure_id: Mapped[str] = mapped_column(String(64), index=True)
    acknowledged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
