"""Tables of one CS: the municipality's 本人確認情報 with history, held changes,
version gaps, outbox, refusals (and consumer offsets for its inbox topic)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from services.common.tier_models import declare_tier_tables, identity_tables


class CsBase(DeclarativeBase):
    """This service's own metadata."""


_tables = declare_tier_tables(CsBase)
Outbox = _tables["Outbox"]
Refusal = _tables["Refusal"]
TABLES = identity_tables(_tables)
