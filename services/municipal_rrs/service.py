"""Use cases of the resident register: one transaction each.

Each writes the new state, a history entry, and — when 本人確認情報 changed —
an outbox row for the CS, all in the same commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import String, Uuid, any_, bindparam, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.household import HouseholdComposition, HouseholdMemberEntry
from contracts.identity import IdentityChange
from contracts.identifiers import new_individual_number, new_resident_code
from contracts.register import HistoryEntry, HouseholdMember, HouseholdPlacement, RegisterResident, Relationship, ResidentRecord
from services.common.outbox import enqueue
from services.municipal_rrs.domain import Changed, RegistryRuleViolation, Resident
from services.municipal_rrs.mapping import from_row, to_identity_change, to_record, to_row_values
from services.municipal_rrs.models import Household, Outbox, ResidentHistoryRow, ResidentRow
from services.municipal_rrs import related


class NotFound(Exception):
    pass


def cs_destination(municipality_code: str) -> str:
    return f"http:cs_gateway.{municipality_code}"


async def _household_for(session: AsyncSession, placement: HouseholdPlacement) -> uuid.UUID:
    if placement.household_id is None:
        household = Household(id=uuid.uuid4())
        session.add(household)
        await session.flush()
        return household.id
    if await session.get(Household, placement.household_id) is None:
        raise RegistryRuleViolation(f"household {placement.household_id} does not exist in this municipality")
    if placement.relationship is Relationship.head and await _head_of(session, placement.household_id) is not None:
        raise RegistryRuleViolation("that household already has a head (世帯主)")
    return placement.household_id


# Statements every change runs, built once: built per call, constructing a statement and its cache key
# cost more than its round trip (docs/architecture.md, "Database access on the hot path").
_ACTIVE_MEMBERS_OF = (
    select(ResidentRow.household_id, ResidentRow.resident_code, ResidentRow.relationship, ResidentRow.family_name, ResidentRow.given_name)
    .where(ResidentRow.household_id == any_(bindparam("household_ids", type_=ARRAY(Uuid))), ResidentRow.status == "active")
    .order_by(ResidentRow.resident_code)
)
# The record itself is read and written as table rows, not ORM objects: the unit of work's bookkeeping
# cost more than the statements. So no session ever holds a ResidentRow that a write here made stale.
_RESIDENTS = ResidentRow.__table__
_RESIDENT = select(_RESIDENTS).where(_RESIDENTS.c.resident_code == bindparam("code"))
_RESIDENT_FOR_UPDATE = _RESIDENT.with_for_update()
_RESIDENTS_AMONG_FOR_UPDATE = (  # locked in code order: two such reads never wait on each other in a cycle
    select(_RESIDENTS).where(_RESIDENTS.c.resident_code == any_(bindparam("codes", type_=ARRAY(String)))).order_by(_RESIDENTS.c.resident_code).with_for_update()
)
_INSERT_RESIDENT = insert(_RESIDENTS)
_UPDATE_RESIDENT = update(_RESIDENTS).where(_RESIDENTS.c.resident_code == bindparam("at_code"))  # SET: the values given
_INSERT_HISTORY = insert(ResidentHistoryRow.__table__)


async def _active_members(session: AsyncSession, household_id: uuid.UUID) -> list:
    """(resident code, relationship, family name, given name) of the household's active members, by code."""
    return (await _active_members_of(session, [household_id])).get(household_id, [])


async def _active_members_of(session: AsyncSession, household_ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    """:func:`_active_members` of several households, in one read."""
    members: dict[uuid.UUID, list] = {}
    for household_id, *member in (await session.execute(_ACTIVE_MEMBERS_OF, {"household_ids": household_ids})).all():
        members.setdefault(household_id, []).append(tuple(member))
    return members


def _head_among(members: list) -> HouseholdMember | None:
    for code, relationship, family_name, given_name in members:
        if relationship == Relationship.head.value:
            return HouseholdMember(resident_code=code, family_name=family_name, given_name=given_name, relationship=Relationship.head)
    return None


def _composition(household_id: uuid.UUID, municipality_code: str, members: list) -> HouseholdComposition:
    return HouseholdComposition(
        household_id=household_id, municipality_code=municipality_code, recorded_at=datetime.now(UTC),
        members=[HouseholdMemberEntry(resident_code=code, relationship=Relationship(rel)) for code, rel, _family, _given in members],
    )


async def _save(session: AsyncSession, resident: Resident, event: Changed, *, staff: str, new: bool, left_household: uuid.UUID | None = None) -> ResidentRecord:
    record, _ = await save(session, resident, event, staff=staff, new=new, left_household=left_household)
    return record


@dataclass(frozen=True)
class Saving:
    """One changed record to write: the resident as the domain left it, and the change that did it."""

    resident: Resident
    event: Changed
    staff: str
    new: bool = False
    left_household: uuid.UUID | None = None


async def save(session: AsyncSession, resident: Resident, event: Changed, *, staff: str, new: bool, left_household: uuid.UUID | None = None) -> tuple[ResidentRecord, IdentityChange | None]:
    """Write the record, its history entry, and what the CS must hear; the identity change sent, if any."""
    [saved] = await save_many(session, [Saving(resident, event, staff, new, left_household)])
    return saved


def _one_or_many(params: list[dict]) -> dict | list[dict]:
    return params[0] if len(params) == 1 else params


async def save_many(session: AsyncSession, savings: list[Saving]) -> list[tuple[ResidentRecord, IdentityChange | None]]:
    """:func:`save` for several residents (each at most once) in the same few statements, whatever their number:
    the register's notice loop closes a whole pull's records at once. A household is sent to the CS once, as it is after all of them."""
    if not savings:
        return []
    inserts = [to_row_values(s.resident) for s in savings if s.new]
    updates = [{**to_row_values(s.resident), "at_code": s.resident.resident_code} for s in savings if not s.new]
    if inserts:
        await session.execute(_INSERT_RESIDENT, _one_or_many(inserts))
    if updates:
        await session.execute(_UPDATE_RESIDENT, _one_or_many(updates))
    touched = {h: s.resident.municipality_code for s in savings for h in (s.resident.household_id, s.left_household) if h is not None}
    members = await _active_members_of(session, list(touched)) if touched else {}  # one read gives each record's head and the compositions the CS keeps
    records = [to_record(s.resident, _head_among(members.get(s.resident.household_id, []))) for s in savings]
    await session.execute(_INSERT_HISTORY, _one_or_many([{
        "resident_code": s.resident.resident_code, "sequence": s.resident.sequence, "version": s.resident.version, "reason": s.event.reason.value,
        "change_date": s.event.change_date, "notified_date": s.event.notified_date, "explanation": s.event.explanation,
        "recorded_by": s.staff, "record": record.model_dump_json(),
    } for s, record in zip(savings, records)]))
    changes: list[IdentityChange | None] = []
    for s in savings:
        change = to_identity_change(s.resident, s.event) if s.event.identity_changed else None
        if change is not None:
            enqueue(session, Outbox, destination=cs_destination(s.resident.municipality_code), key=s.resident.resident_code, kind="identity-change", payload=change.model_dump_json())
        changes.append(change)
    # the CS answers household requests from what the register sends it (R-PRV-3)
    for household_id, municipality_code in touched.items():
        composition = _composition(household_id, municipality_code, members.get(household_id, []))
        enqueue(session, Outbox, destination=cs_destination(municipality_code), key=str(household_id), kind="household-composition", payload=composition.model_dump_json())
    await related.after_saves(session, [(s.resident, s.event, s.staff) for s in savings])  # seals end, 住登外者 link (R-REL-1)
    return list(zip(records, changes))


async def _head_of(session: AsyncSession, household_id: uuid.UUID) -> HouseholdMember | None:
    return _head_among(await _active_members(session, household_id))


async def register_resident(session: AsyncSession, cmd: RegisterResident, *, municipality_code: str, staff: str, today: date) -> ResidentRecord:
    household_id = await _household_for(session, cmd.household)
    for _ in range(5):  # fresh codes; retry on the (rare) collision
        code, number = new_resident_code(), new_individual_number()
        taken = (await session.execute(select(ResidentRow.resident_code).where(or_(ResidentRow.resident_code == code, ResidentRow.individual_number == number)))).first()
        if taken is None:
            break
    else:
        raise RegistryRuleViolation("could not allocate a fresh resident code")
    resident, event = Resident.register(cmd, resident_code=code, individual_number=number, municipality_code=municipality_code, household_id=household_id, today=today)
    return await _save(session, resident, event, staff=staff, new=True)


async def resident_row(session: AsyncSession, resident_code: str, *, for_update: bool = False):
    """The record's table row (or None), optionally locked until the transaction ends."""
    return (await session.execute(_RESIDENT_FOR_UPDATE if for_update else _RESIDENT, {"code": resident_code})).one_or_none()


async def resident_rows_for_update(session: AsyncSession, resident_codes: list[str]) -> dict[str, object]:
    """The table rows of the records among ``resident_codes`` that exist, by code, locked until the transaction ends."""
    return {row.resident_code: row for row in (await session.execute(_RESIDENTS_AMONG_FOR_UPDATE, {"codes": resident_codes})).all()}


async def load(session: AsyncSession, resident_code: str, *, for_update: bool = False) -> Resident:
    row = await resident_row(session, resident_code, for_update=for_update)
    if row is None:
        raise NotFound(resident_code)
    return from_row(row)


async def change(session: AsyncSession, resident_code: str, act: Callable[[Resident], Changed], *, staff: str) -> ResidentRecord:
    """Load the record under a row lock, apply one domain method, save."""
    resident = await load(session, resident_code, for_update=True)
    event = act(resident)
    return await _save(session, resident, event, staff=staff, new=False)


async def change_household(session: AsyncSession, resident_code: str, cmd, *, staff: str) -> ResidentRecord:
    resident = await load(session, resident_code, for_update=True)
    previous = resident.household_id
    household_id = await _household_for(session, cmd.household)
    event = resident.change_household(cmd, household_id=household_id)
    return await _save(session, resident, event, staff=staff, new=False, left_household=previous)


async def get_record(session: AsyncSession, resident_code: str) -> ResidentRecord:
    resident = await load(session, resident_code)
    return to_record(resident, await _head_of(session, resident.household_id))


async def history(session: AsyncSession, resident_code: str) -> list[HistoryEntry]:
    rows = (await session.execute(select(ResidentHistoryRow).where(ResidentHistoryRow.resident_code == resident_code).order_by(ResidentHistoryRow.sequence))).scalars().all()
    if not rows:
        raise NotFound(resident_code)
    return [HistoryEntry(version=r.version, reason=r.reason, change_date=r.change_date, notified_date=r.notified_date, recorded_at=r.recorded_at, recorded_by=r.recorded_by, explanation=r.explanation) for r in rows]


async def household_members(session: AsyncSession, household_id: uuid.UUID) -> list[HouseholdMember]:
    rows = (await session.execute(select(ResidentRow).where(ResidentRow.household_id == household_id, ResidentRow.status == "active").order_by(ResidentRow.relationship != Relationship.head.value, ResidentRow.birth_date))).scalars().all()
    if not rows and await session.get(Household, household_id) is None:
        raise NotFound(str(household_id))
    return [HouseholdMember(resident_code=r.resident_code, family_name=r.family_name, given_name=r.given_name, relationship=Relationship(r.relationship)) for r in rows]


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(session: AsyncSession, *, name: str | None, kana: str | None, birth_date: date | None, address: str | None, include_closed: bool, limit: int) -> tuple[list[ResidentRecord], bool]:
    stmt = select(ResidentRow)
    if name:
        n = _escape_like(name) + "%"
        stmt = stmt.where(or_(ResidentRow.family_name.like(n), ResidentRow.given_name.like(n), (ResidentRow.family_name + ResidentRow.given_name).like(n), ResidentRow.alias.like(n)))
    if kana:
        k = _escape_like(kana.replace(" ", "").replace("\u3000", "")) + "%"
        stmt = stmt.where(or_(ResidentRow.family_name_kana.like(k), ResidentRow.given_name_kana.like(k), (ResidentRow.family_name_kana + ResidentRow.given_name_kana).like(k)))
    if birth_date:
        stmt = stmt.where(ResidentRow.birth_date == birth_date)
    if address:
        stmt = stmt.where(ResidentRow.address_text.like("%" + _escape_like(address) + "%"))
    if not include_closed:
        stmt = stmt.where(ResidentRow.status.in_(("active", "moving_out")))  # 転出予定 is still on the register
    rows = (await session.execute(stmt.order_by(ResidentRow.family_name_kana, ResidentRow.given_name_kana, ResidentRow.resident_code).limit(limit + 1))).scalars().all()
    return [to_record(from_row(r)) for r in rows[:limit]], len(rows) > limit
