"""Tables of the national server."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Index, Integer, String, Text, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.recovery_models import declare_recovery_tables
from services.common.tier_models import declare_tier_tables, identity_tables
from services.common.protection import ProtectionMarkerMixin
from services.common.idempotency import IdempotencyKeyMixin


class NationalBase(DeclarativeBase):
    """This service's own metadata."""


_tables = declare_tier_tables(NationalBase)
Identity = _tables["Identity"]
Outbox = _tables["Outbox"]
Refusal = _tables["Refusal"]
ConsumerOffset = _tables["ConsumerOffset"]
DeadLetter = _tables["DeadLetter"]
MessageReceipt = _tables["MessageReceipt"]
RECOVERY = declare_recovery_tables(NationalBase, sends_snapshots=False)  # snapshots and reconciliation
TABLES = identity_tables(_tables)


class FollowRow(NationalBase):
    """An agency follows a person for an affair (push-type provision)."""

    __tablename__ = "follows"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(40))
    affair: Mapped[str] = mapped_column(String(40))
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    until: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("one_active_follow", "agency_id", "affair", "resident_code", unique=True, postgresql_where="stopped_at IS NULL"),
    )


class NotificationRow(NationalBase):
    """One change notification for one follow: pending (in its hold window), delivered, or superseded."""

    __tablename__ = "notifications"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    follow_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    agency_id: Mapped[str] = mapped_column(String(40))
    affair: Mapped[str] = mapped_column(String(40))
    resident_code: Mapped[str] = mapped_column(String(11))
    change_event_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    corrects: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    change: Mapped[str] = mapped_column(Text)  # the IdentityChange the notification reports
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | delivered | superseded
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sequence: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    payload: Mapped[str | None] = mapped_column(Text)  # the ChangeNotification as delivered
    __table_args__ = (Index("notifications_feed", "agency_id", "sequence"),)


class ProtectionMarkerRow(NationalBase, ProtectionMarkerMixin):
    """The newest DV protection marker of a person, as the home CS sent it (services/common/protection.py)."""

    __tablename__ = "protection_markers"


class IdempotencyKey(NationalBase, IdempotencyKeyMixin):
    """Idempotency-Key of a POST and its first answer (services/common/idempotency.py)."""
