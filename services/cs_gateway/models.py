"""Tables of one CS: the municipality's 本人確認情報 with history, held changes,
version gaps, outbox, refusals (and consumer offsets for its inbox topic)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, String, Text, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.tier_models import declare_tier_tables, identity_tables


class CsBase(DeclarativeBase):
    """This service's own metadata."""


_tables = declare_tier_tables(CsBase)
Identity = _tables["Identity"]
Outbox = _tables["Outbox"]
Refusal = _tables["Refusal"]
TABLES = identity_tables(_tables)



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
