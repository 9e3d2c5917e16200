"""Protection markers of DV support measures at the prefecture and national servers (R-DV-1).

The home municipality's CS sends a :class:`ProtectionMarker` on the same
identity topic as the person's changes (key: the resident code, Kafka header
``jukinet-kind: protection-marker/v1``), so it keeps their order, is stored
with the consumer's offset in one transaction, and travels without the
prefecture tier too. Each tier keeps the newest marker per person; provision
to agencies reads it (``protected: true``, and no address unless the affair
requires it).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection
from datetime import date, datetime

from aiokafka import ConsumerRecord
from sqlalchemy import Boolean, Date, DateTime, String, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from contracts.dv import ProtectionMarker
from contracts.topics import HEADER_MESSAGE_KIND
from services.common.dv_rules import marker_supersedes
from services.common.kafka import Refuse

MARKER_KIND = "protection-marker/v1"


class ProtectionMarkerMixin:
    """The newest protection marker of one person, as the home CS sent it."""

    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    municipality_code: Mapped[str] = mapped_column(String(6))
    protected: Mapped[bool] = mapped_column(Boolean)
    valid_until: Mapped[date | None] = mapped_column(Date)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


def is_marker_record(record: ConsumerRecord) -> bool:
    """The producer names the kind in a header, so identity changes are not parsed twice."""
    return any(key == HEADER_MESSAGE_KIND and value == MARKER_KIND.encode() for key, value in (record.headers or ()))


async def take_marker(session: AsyncSession, model, marker: ProtectionMarker) -> bool | None:
    """Keep the marker if it is newer than the one held. True/False: whether ``protected`` changed; None: stale."""
    held = await session.get(model, marker.resident_code, with_for_update=True)
    if held is not None and not marker_supersedes(held.as_of, marker.as_of):
        return None
    if held is None:
        session.add(model(resident_code=marker.resident_code, municipality_code=marker.municipality_code, protected=marker.protected,
                          valid_until=marker.valid_until, as_of=marker.as_of))
        await session.flush()
        return marker.protected
    changed = held.protected != marker.protected
    held.municipality_code, held.protected, held.valid_until, held.as_of = marker.municipality_code, marker.protected, marker.valid_until, marker.as_of
    return changed


async def protected_codes(session: AsyncSession, model, codes: Collection[str]) -> set[str]:
    """Which of these persons a measure protects now."""
    if not codes:
        return set()
    rows = await session.execute(_protected_among(model), {"codes": list(codes)})
    return set(rows.scalars())


@functools.cache
def _protected_among(model):
    """Built once per marker table: asked for every notification delivered and every answer given."""
    return select(model.resident_code).where(model.resident_code.in_(bindparam("codes", expanding=True)), model.protected.is_(True))


def marker_handler(model, *, check: Callable[[ProtectionMarker], None] | None = None,
                   after: Callable[[AsyncSession, ProtectionMarker, bool], Awaitable[None]] | None = None):
    """A consumer handler for marker records: validate, keep the newest, then ``after(session, marker, changed)``."""

    async def handle(session: AsyncSession, record: ConsumerRecord) -> None:
        marker = ProtectionMarker.model_validate_json(record.value or b"")
        if record.key is not None and record.key.decode() != marker.resident_code:
            raise Refuse("record key is not the resident code of the marker")
        if check is not None:
            check(marker)
        changed = await take_marker(session, model, marker)
        if changed is not None and after is not None:
            await after(session, marker, changed)

    return handle
