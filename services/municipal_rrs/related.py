"""Related municipal affairs that must keep working with the register (R-REL-1).

住登外者 and 印鑑登録 are kept beside the 住民票 in the register's own
database, so the register's use cases can keep them true in the same
transaction: :func:`after_saves` runs inside :func:`service.save_many` — a seal
registration ends with the 転出, death or removal that closes its holder's
record, and a 住登外者 whose 個人番号 is known is linked to the 住民票 the
moment they move in. Without a 個人番号, a link is never guessed from a name:
staff see the candidates (same birth date and same name or reading) and link
after checking identity.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import String, any_, bindparam, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.identity import ChangeReason, PersonName, RegistrationStatus, Sex
from contracts.register import ResidentRecord
from contracts.related import (
    EndSeal, NonResident, NonResidentReason, NonResidentStatus, RegisterNonResident, RegisterSeal, SealEndReason, SealRegistration, SealStatus,
)
from services.municipal_rrs.domain import Changed, RegistryRuleViolation, Resident
from services.municipal_rrs.mapping import from_row, to_record
from services.municipal_rrs.models import ResidentRow
from services.municipal_rrs.related_models import NonResidentRow, SealRegistrationRow

#: 印鑑登録 is open from this age (印鑑条例: 15歳未満の者は登録できない).
SEAL_MINIMUM_AGE = 15
ON_REGISTER = ("active", "moving_out")


class NotFound(Exception):
    pass


# --- rules (no I/O) -------------------------------------------------------------------------------------------


def age_on(birth_date: date, day: date) -> int:
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def seal_refusal(*, holder_status: str, holder_birth_date: date, registered_on: date, today: date, holder_has_seal: bool) -> str | None:
    """Why a seal cannot be registered, or None: only residents on the register, aged 15, one seal each."""
    if holder_status != RegistrationStatus.active.value:
        return f"the holder is not an active resident ({holder_status}); only residents on the register can register a seal"
    if registered_on > today:
        return "the registration date is in the future"
    if age_on(holder_birth_date, registered_on) < SEAL_MINIMUM_AGE:
        return f"a seal can be registered from the age of {SEAL_MINIMUM_AGE}"
    if holder_has_seal:
        return "the holder already has a registered seal; end it first (one registered seal per person)"
    return None


def automatic_end_reason(resident: Resident, event: Changed) -> SealEndReason | None:
    """The record left the register: the seal registration ends with it (職権抹消)."""
    if resident.status is RegistrationStatus.deceased:
        return SealEndReason.died
    if resident.status is RegistrationStatus.moving_out or (resident.status is RegistrationStatus.removed and event.reason is ChangeReason.move_out):
        return SealEndReason.moved_out
    if resident.status is RegistrationStatus.removed:
        return SealEndReason.removed
    return None


# --- the hook in the register's save ---------------------------------------------------------------------------


async def after_saves(session: AsyncSession, saved: list[tuple[Resident, Changed, str]]) -> None:
    """Keep the related affairs true in the same transaction as the register's changes (resident, change, staff):
    one read for the seals of all records that left, one for the 住登外者 of all that moved in."""
    ending = {resident.resident_code: (reason, event.change_date, staff) for resident, event, staff in saved
              if (reason := automatic_end_reason(resident, event)) is not None}
    if ending:
        for row in (await session.execute(_SEALS_IN_FORCE_AMONG, {"codes": list(ending)})).scalars().all():
            _end_seal(row, *ending[row.holder_resident_code])
    arriving = {resident.individual_number: (resident.resident_code, staff) for resident, event, staff in saved
                if event.reason in (ChangeReason.move_in, ChangeReason.ex_officio_record) and resident.status is RegistrationStatus.active}
    if arriving:
        for row in (await session.execute(_ACTIVE_NON_RESIDENTS_AMONG_NUMBERS, {"numbers": list(arriving)})).scalars().all():
            code, staff = arriving[row.individual_number]
            _link(row, code, staff=f"{staff} (転入時に個人番号で自動連携)"[:100])


#: Run at every move-out, death and move-in, almost always finding nothing: built once (its cache key with it).
_SEALS_IN_FORCE_AMONG = select(SealRegistrationRow).where(
    SealRegistrationRow.holder_resident_code == any_(bindparam("codes", type_=ARRAY(String))), SealRegistrationRow.status == SealStatus.registered.value,
).order_by(SealRegistrationRow.registration_number).with_for_update()
_ACTIVE_NON_RESIDENTS_AMONG_NUMBERS = select(NonResidentRow).where(
    NonResidentRow.individual_number == any_(bindparam("numbers", type_=ARRAY(String))), NonResidentRow.status == NonResidentStatus.active.value,
).order_by(NonResidentRow.id).with_for_update()


def _end_seal(row: SealRegistrationRow, reason: SealEndReason, ended_on: date, staff: str) -> None:
    row.status, row.end_reason, row.ended_on, row.ended_by = SealStatus.ended.value, reason.value, ended_on, staff
    row.explanation = {SealEndReason.moved_out: "転出による職権抹消", SealEndReason.died: "死亡による職権抹消", SealEndReason.removed: "職権消除による職権抹消"}.get(reason)


def _link(row: NonResidentRow, resident_code: str, *, staff: str) -> None:
    row.status, row.linked_resident_code, row.linked_at, row.linked_by = NonResidentStatus.linked.value, resident_code, datetime.now(UTC), staff


# --- 住登外者 -------------------------------------------------------------------------------------------------


def _non_resident(row: NonResidentRow) -> NonResident:
    return NonResident(
        non_resident_id=row.id, number=row.number,
        name=PersonName(family_name=row.family_name, given_name=row.given_name, family_name_kana=row.family_name_kana, given_name_kana=row.given_name_kana),
        birth_date=row.birth_date, sex=Sex(row.sex) if row.sex else None, individual_number=row.individual_number,
        address_text=row.address_text, address_municipality_code=row.address_municipality_code, postal_code=row.postal_code,
        reason=NonResidentReason(row.reason), note=row.note, status=NonResidentStatus(row.status),
        linked_resident_code=row.linked_resident_code, linked_at=row.linked_at, linked_by=row.linked_by,
        registered_at=row.registered_at, registered_by=row.registered_by,
    )


async def register_non_resident(session: AsyncSession, cmd: RegisterNonResident, *, municipality_code: str, staff: str) -> NonResident:
    if cmd.address_municipality_code == municipality_code:
        raise RegistryRuleViolation("a 住登外者 lives outside this municipality; a person living here is registered as a resident")
    if cmd.individual_number is not None:
        resident = (await session.execute(select(ResidentRow.resident_code).where(
            ResidentRow.individual_number == cmd.individual_number, ResidentRow.status.in_(ON_REGISTER)))).scalar_one_or_none()
        if resident is not None:
            raise RegistryRuleViolation(f"this person is on the register as resident {resident}; use the 住民票")
        twin = (await session.execute(select(NonResidentRow.number).where(
            NonResidentRow.individual_number == cmd.individual_number, NonResidentRow.status == NonResidentStatus.active.value))).scalar_one_or_none()
        if twin is not None:
            raise RegistryRuleViolation(f"this person is already managed as 住登外者 number {twin}")
    row = NonResidentRow(
        id=uuid.uuid4(), family_name=cmd.name.family_name, given_name=cmd.name.given_name, family_name_kana=cmd.name.family_name_kana,
        given_name_kana=cmd.name.given_name_kana, birth_date=cmd.birth_date, sex=cmd.sex.value if cmd.sex else None,
        individual_number=cmd.individual_number, address_text=cmd.address_text, address_municipality_code=cmd.address_municipality_code,
        postal_code=cmd.postal_code, reason=cmd.reason.value, note=cmd.note, status=NonResidentStatus.active.value, registered_by=staff,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return _non_resident(row)


async def get_non_resident(session: AsyncSession, non_resident_id: uuid.UUID) -> NonResident:
    row = await session.get(NonResidentRow, non_resident_id)
    if row is None:
        raise NotFound(str(non_resident_id))
    return _non_resident(row)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_non_residents(session: AsyncSession, *, name: str | None = None, kana: str | None = None, birth_date: date | None = None,
                               status: NonResidentStatus | None = None, linked_resident_code: str | None = None, limit: int = 100) -> list[NonResident]:
    stmt = select(NonResidentRow)
    if name:
        n = _escape_like(name.replace(" ", "").replace("\u3000", "")) + "%"
        stmt = stmt.where(or_(NonResidentRow.family_name.like(n), (NonResidentRow.family_name + NonResidentRow.given_name).like(n)))
    if kana:
        k = _escape_like(kana.replace(" ", "").replace("\u3000", "")) + "%"
        stmt = stmt.where(or_(NonResidentRow.family_name_kana.like(k), (NonResidentRow.family_name_kana + NonResidentRow.given_name_kana).like(k)))
    if birth_date:
        stmt = stmt.where(NonResidentRow.birth_date == birth_date)
    if status is not None:
        stmt = stmt.where(NonResidentRow.status == status.value)
    if linked_resident_code:
        stmt = stmt.where(NonResidentRow.linked_resident_code == linked_resident_code)
    rows = (await session.execute(stmt.order_by(NonResidentRow.family_name_kana, NonResidentRow.given_name_kana, NonResidentRow.number).limit(limit))).scalars()
    return [_non_resident(r) for r in rows]


async def link_candidates(session: AsyncSession, non_resident_id: uuid.UUID) -> list[ResidentRecord]:
    """Residents who may be this 住登外者: same birth date and the same name or reading. Staff decide."""
    row = await session.get(NonResidentRow, non_resident_id)
    if row is None:
        raise NotFound(str(non_resident_id))
    same_name = ResidentRow.family_name == row.family_name
    if row.given_name:
        same_name = same_name & (ResidentRow.given_name == row.given_name)
    same_kana = ResidentRow.family_name_kana == row.family_name_kana
    if row.given_name_kana:
        same_kana = same_kana & (ResidentRow.given_name_kana == row.given_name_kana)
    match = or_(same_name, same_kana) if row.family_name_kana else same_name
    rows = (await session.execute(select(ResidentRow).where(
        ResidentRow.birth_date == row.birth_date, ResidentRow.status.in_(ON_REGISTER), match,
    ).order_by(ResidentRow.resident_code).limit(20))).scalars()
    return [to_record(from_row(r)) for r in rows]


async def link_non_resident(session: AsyncSession, non_resident_id: uuid.UUID, resident_code: str, *, staff: str) -> NonResident:
    """Staff confirmed the 住登外者 is this resident: the records are linked (and the 住登外者 is no longer managed apart)."""
    row = await session.get(NonResidentRow, non_resident_id, with_for_update=True)
    if row is None:
        raise NotFound(str(non_resident_id))
    if row.status != NonResidentStatus.active.value:
        raise RegistryRuleViolation(f"住登外者 {row.number} is {row.status}; only an active one can be linked")
    resident = await session.get(ResidentRow, resident_code)
    if resident is None:
        raise NotFound(resident_code)
    if resident.status not in ON_REGISTER:
        raise RegistryRuleViolation(f"resident {resident_code} is not on the register ({resident.status})")
    if resident.birth_date != row.birth_date:
        raise RegistryRuleViolation("the birth dates differ: these are not the same person")
    if row.individual_number and row.individual_number != resident.individual_number:
        raise RegistryRuleViolation("the individual numbers differ: these are not the same person")
    _link(row, resident_code, staff=staff)
    return _non_resident(row)


async def non_residents_awaiting_link(session: AsyncSession, *, limit: int = 50) -> list[tuple[NonResident, ResidentRecord]]:
    """Active 住登外者 who match a resident by birth date and reading: likely moved in, for staff to link."""
    pairs = (await session.execute(select(NonResidentRow, ResidentRow).join(ResidentRow, (ResidentRow.birth_date == NonResidentRow.birth_date) & (
        ResidentRow.family_name_kana == NonResidentRow.family_name_kana) & (ResidentRow.given_name_kana == NonResidentRow.given_name_kana)).where(
        NonResidentRow.status == NonResidentStatus.active.value, ResidentRow.status.in_(ON_REGISTER),
    ).order_by(NonResidentRow.number).limit(limit))).all()
    return [(_non_resident(n), to_record(from_row(r))) for n, r in pairs]


# --- 印鑑登録 -------------------------------------------------------------------------------------------------


def _seal(row: SealRegistrationRow) -> SealRegistration:
    return SealRegistration(
        registration_number=row.registration_number, holder_resident_code=row.holder_resident_code, impression=row.impression,
        status=SealStatus(row.status), registered_on=row.registered_on, registered_by=row.registered_by, ended_on=row.ended_on,
        end_reason=SealEndReason(row.end_reason) if row.end_reason else None, ended_by=row.ended_by, explanation=row.explanation,
    )


async def register_seal(session: AsyncSession, cmd: RegisterSeal, *, staff: str, today: date) -> SealRegistration:
    holder = (await session.execute(select(ResidentRow).where(ResidentRow.resident_code == cmd.holder_resident_code).with_for_update())).scalar_one_or_none()
    if holder is None:
        raise NotFound(cmd.holder_resident_code)
    has_seal = (await session.execute(select(SealRegistrationRow.registration_number).where(
        SealRegistrationRow.holder_resident_code == holder.resident_code, SealRegistrationRow.status == SealStatus.registered.value))).first() is not None
    refusal = seal_refusal(holder_status=holder.status, holder_birth_date=holder.birth_date, registered_on=cmd.registered_on, today=today, holder_has_seal=has_seal)
    if refusal:
        raise RegistryRuleViolation(refusal)
    row = SealRegistrationRow(holder_resident_code=holder.resident_code, impression=cmd.impression, status=SealStatus.registered.value,
                              registered_on=cmd.registered_on, registered_by=staff)
    session.add(row)
    await session.flush()
    return _seal(row)


async def get_seal(session: AsyncSession, registration_number: int) -> SealRegistration:
    row = await session.get(SealRegistrationRow, registration_number)
    if row is None:
        raise NotFound(str(registration_number))
    return _seal(row)


async def list_seals(session: AsyncSession, *, holder_resident_code: str | None = None, status: SealStatus | None = None, limit: int = 200) -> list[SealRegistration]:
    stmt = select(SealRegistrationRow)
    if holder_resident_code:
        stmt = stmt.where(SealRegistrationRow.holder_resident_code == holder_resident_code)
    if status is not None:
        stmt = stmt.where(SealRegistrationRow.status == status.value)
    rows = (await session.execute(stmt.order_by(SealRegistrationRow.registration_number.desc()).limit(limit))).scalars()
    return [_seal(r) for r in rows]


async def end_seal(session: AsyncSession, registration_number: int, cmd: EndSeal, *, staff: str, today: date) -> SealRegistration:
    """印鑑登録廃止 (the holder's request, or a lost seal or card)."""
    row = await session.get(SealRegistrationRow, registration_number, with_for_update=True)
    if row is None:
        raise NotFound(str(registration_number))
    if row.status != SealStatus.registered.value:
        raise RegistryRuleViolation(f"seal registration {registration_number} has already ended ({row.end_reason})")
    if cmd.ended_on > today or cmd.ended_on < row.registered_on:
        raise RegistryRuleViolation("the end date must be between the registration date and today")
    row.status, row.end_reason, row.ended_on, row.ended_by, row.explanation = SealStatus.ended.value, cmd.reason.value, cmd.ended_on, staff, cmd.explanation
    return _seal(row)
