"""The store of 本人確認情報 kept by every network tier (CS, prefecture, national).

Each tier keeps the latest identity of each person, the full history of
changes (by version), changes held back because an earlier version is
missing, and a record of every gap and how it was healed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from types import SimpleNamespace
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Integer, Row, String, Text, bindparam, delete, exists, func, insert, literal, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from contracts.identity import IdentityChange
from services.common.telemetry import current_traceparent
from services.common.versioning import Decision, decide


class IdentityCurrentMixin:
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    individual_number: Mapped[str] = mapped_column(String(12), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    municipality_code: Mapped[str] = mapped_column(String(6), index=True)
    family_name: Mapped[str] = mapped_column(String(60), index=True)
    given_name: Mapped[str | None] = mapped_column(String(60))
    family_name_kana: Mapped[str | None] = mapped_column(String(120), index=True)
    given_name_kana: Mapped[str | None] = mapped_column(String(120))
    birth_date: Mapped[date] = mapped_column(Date, index=True)
    sex: Mapped[str] = mapped_column(String(8))
    address_text: Mapped[str] = mapped_column(String(200))
    last_reason: Mapped[str] = mapped_column(String(32))
    last_change_date: Mapped[date] = mapped_column(Date)
    payload: Mapped[str] = mapped_column(Text)  # the IdentityChange that made this version
    traceparent: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class IdentityHistoryMixin:
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class HeldChangeMixin:
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    payload: Mapped[str] = mapped_column(Text)
    held_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class VersionGapMixin:
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    expected_version: Mapped[int] = mapped_column(Integer)
    received_version: Mapped[int] = mapped_column(Integer)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    healed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    healed_by: Mapped[str | None] = mapped_column(String(200))


@dataclass(frozen=True)
class IdentityTables:
    current: type
    history: type
    held: type
    gaps: type


class VersionConflict(ValueError):
    """A different change claims a version this tier already holds."""


@dataclass
class ApplyOutcome:
    decision: Decision
    applied: list[IdentityChange] = field(default_factory=list)


_CURRENT_COLUMNS = (
    "resident_code", "individual_number", "version", "status", "municipality_code", "family_name", "given_name", "family_name_kana", "given_name_kana",
    "birth_date", "sex", "address_text", "last_reason", "last_change_date", "payload", "traceparent",
)  # what a change writes to the current row (updated_at is the database's)


def _current_values(change: IdentityChange, raw: str) -> dict:
    ident = change.identity
    return dict(
        resident_code=change.resident_code,
        individual_number=ident.individual_number,
        version=change.version,
        status=change.status.value,
        municipality_code=change.municipality_code,
        family_name=ident.name.family_name,
        given_name=ident.name.given_name,
        family_name_kana=ident.name.family_name_kana,
        given_name_kana=ident.name.given_name_kana,
        birth_date=ident.birth_date,
        sex=ident.sex.value,
        address_text=ident.address.text,
        last_reason=change.reason.value,
        last_change_date=change.change_date,
        payload=raw,
        traceparent=current_traceparent(),
    )


async def apply_change(session: AsyncSession, tables: IdentityTables, change: IdentityChange, *, check=None, arriving=None) -> ApplyOutcome:
    """Apply one change under the version rules, then any held successors.

    ``check(current_row, change)`` may raise to refuse a change on a tier's own
    rules (e.g. the national server's one-active-registration rule).

    Every tier runs this for every change, so it is written as few Core
    statements: one reads the locked current row and whether anything is held
    for the person; one writes the current row and the history entry. The
    history is read only for a version the tier already holds (a redelivery
    or a conflict), and held successors only when something is held.
    """
    raw = change.model_dump_json()
    current, something_held = await _locked_current(session, tables, change.resident_code)
    recorded = None
    if current is not None and change.version <= current.version:
        recorded = (await session.execute(select(tables.history.event_id).where(tables.history.resident_code == change.resident_code, tables.history.version == change.version))).scalar_one_or_none()
    decision = decide(
        held_version=current.version if current else None, held_event_id_for_version=recorded, incoming_version=change.version,
        incoming_event_id=str(change.event_id), arriving=arriving is not None and arriving(current, change),
    )
    if decision is Decision.duplicate:
        return ApplyOutcome(decision)
    if decision is Decision.conflict:
        raise VersionConflict(f"version {change.version} of {change.resident_code} is already held with another event")
    if decision is Decision.gap:
        await session.execute(pg_insert(tables.held).values(resident_code=change.resident_code, version=change.version, payload=raw).on_conflict_do_nothing())
        session.add(tables.gaps(resident_code=change.resident_code, expected_version=(current.version if current else 0) + 1, received_version=change.version))
        return ApplyOutcome(decision)

    outcome = ApplyOutcome(Decision.apply)
    while True:
        if check is not None:
            check(current, change)
        values = _current_values(change, raw)
        await session.execute(*_write_statement(tables, values, change, has_current=current is not None))
        current = SimpleNamespace(**values)
        outcome.applied.append(change)
        if not something_held:
            break
        successor = (await session.execute(
            delete(tables.held).where(tables.held.resident_code == change.resident_code, tables.held.version == change.version + 1).returning(tables.held.payload)
        )).scalar_one_or_none()
        if successor is None:
            break
        change = IdentityChange.model_validate_json(successor)
        raw = successor
    return outcome


async def _locked_current(session: AsyncSession, tables: IdentityTables, resident_code: str) -> tuple[Row | None, bool]:
    """The person's current row, locked for this transaction (None if the tier has none), and whether changes are held for them."""
    row = (await session.execute(_statements(tables).locked_current, {"resident_code": resident_code})).one()
    return (None if row.resident_code is None else row), row.something_held


def _write_statement(tables: IdentityTables, values: dict, change: IdentityChange, *, has_current: bool):
    """One statement and its parameters: the history entry (a data-modifying CTE) and the current row, inserted or updated."""
    statements = _statements(tables)
    params = {f"v_{column}": value for column, value in values.items()}
    params.update(h_version=change.version, h_event_id=str(change.event_id))
    return (statements.update_current if has_current else statements.insert_current), params


@dataclass(frozen=True)
class _ApplyStatements:
    locked_current: object
    insert_current: object
    update_current: object


@cache
def _statements(tables: IdentityTables) -> _ApplyStatements:
    """The statements of :func:`apply_change` for one tier's tables, built once with bound parameters.

    Built per call, each statement cost more Python than its round trip:
    constructing the clauses, computing its cache key, and adapting the
    cached result columns to the new statement object. Plain
    ``sqlalchemy.insert``, not the PostgreSQL dialect's, whose statements are
    never cached (its ON CONFLICT clause has no cache key).
    """
    current_table, held_table = tables.current.__table__, tables.held.__table__
    code = bindparam("resident_code")
    locked = select(current_table).where(current_table.c.resident_code == code).with_for_update().cte("locked")
    one_row = select(literal(1).label("one")).subquery("one_row")
    held = exists().where(held_table.c.resident_code == code).label("something_held")
    locked_current = select(locked, held).select_from(one_row.outerjoin(locked, true()))

    value_of = {column: bindparam(f"v_{column}") for column in _CURRENT_COLUMNS}
    history = insert(tables.history.__table__).values(
        resident_code=value_of["resident_code"], version=bindparam("h_version"), event_id=bindparam("h_event_id"), payload=value_of["payload"],
    ).cte("history_entry")
    insert_current = insert(current_table).values(value_of).add_cte(history)
    update_current = (
        update(current_table).where(current_table.c.resident_code == value_of["resident_code"]).values({**value_of, "updated_at": func.now()}).add_cte(history)
    )
    return _ApplyStatements(locked_current=locked_current, insert_current=insert_current, update_current=update_current)


async def changes_after(session: AsyncSession, tables: IdentityTables, resident_code: str, after_version: int) -> list[IdentityChange]:
    rows = (await session.execute(select(tables.history).where(tables.history.resident_code == resident_code, tables.history.version > after_version).order_by(tables.history.version))).scalars().all()
    return [IdentityChange.model_validate_json(r.payload) for r in rows]


async def persons_with_gaps(session: AsyncSession, tables: IdentityTables) -> list[tuple[str, int]]:
    """(resident code, version this tier holds) for every person with held changes."""
    rows = (await session.execute(select(tables.held.resident_code).distinct())).scalars().all()
    out = []
    for code in rows:
        version = (await session.execute(select(tables.current.version).where(tables.current.resident_code == code))).scalar_one_or_none()
        out.append((code, version or 0))
    return out


async def mark_gaps_healed(session: AsyncSession, tables: IdentityTables, resident_code: str, healed_by: str) -> None:
    gaps = (await session.execute(select(tables.gaps).where(tables.gaps.resident_code == resident_code, tables.gaps.healed_at.is_(None)))).scalars().all()
    for g in gaps:
        g.healed_at = func.now()
        g.healed_by = healed_by
