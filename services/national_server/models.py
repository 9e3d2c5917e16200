"""Tables of the national server."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from services.common.tier_models import declare_tier_tables, identity_tables


class NationalBase(DeclarativeBase):
    """This service's own metadata."""


_tables = declare_tier_tables(NationalBase)
Identity = _tables["Identity"]
Outbox = _tables["Outbox"]
Refusal = _tables["Refusal"]
ConsumerOffset = _tables["ConsumerOffset"]
DeadLetter = _tables["DeadLetter"]
TABLES = identity_tables(_tables)
