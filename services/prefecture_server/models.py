"""Tables of one prefecture server."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from services.common.recovery_models import declare_recovery_tables
from services.common.tier_models import declare_tier_tables, identity_tables
from services.common.protection import ProtectionMarkerMixin


class PrefectureBase(DeclarativeBase):
    """This service's own metadata."""


_tables = declare_tier_tables(PrefectureBase)
Identity = _tables["Identity"]
Outbox = _tables["Outbox"]
Refusal = _tables["Refusal"]
ConsumerOffset = _tables["ConsumerOffset"]
DeadLetter = _tables["DeadLetter"]
MessageReceipt = _tables["MessageReceipt"]
RECOVERY = declare_recovery_tables(PrefectureBase, sends_snapshots=False)  # snapshots and reconciliation
TABLES = identity_tables(_tables)


class ProtectionMarkerRow(PrefectureBase, ProtectionMarkerMixin):
    """The newest DV protection marker of a person, as the home CS sent it (services/common/protection.py)."""

    __tablename__ = "protection_markers"
