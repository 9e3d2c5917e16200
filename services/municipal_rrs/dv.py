"""DV等支援措置 at the register: the lifecycle, its propagation, staff alerts and certificate requests.

The rules are in :mod:`services.common.dv_rules`; this module does the I/O
around them, one transaction per use case (the caller's session).

Propagation (R-DV-1): every revision of a measure this municipality carries
goes, in the transaction that made it, to the own CS (which holds it for
広域交付 answers and sends the protection marker upward) and, as a delivery
row, to every municipality that holds records of the person. The
housekeeping loop sends due deliveries through the outbox and sends again,
with backoff, until the receiving register acknowledges; a delivery not
acknowledged within the first window — or to a municipality not on the
network — is raised to staff, and stays raised until it is acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import String, bindparam, cast, exists, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.dv import (
    AckStage, AlertKind, CertificateAttemptNotice, CertificateDocument, CertificateEntry, CertificateRequest, CertificateRequestView,
    CertificateSubject, CertificateType, DeliveryRole, DeliveryState, MeasureAction, MeasureDelivery, MeasureStatus, MeasureStep,
    ProtectedPerson, ProtectedRole, RequestChannel, RequestState, Requester, RequesterRelation, SupportMeasure, SupportMeasureAck,
    SupportMeasureAlert, SupportMeasureApplication, SupportMeasureCancellation, SupportMeasureDecision, SupportMeasureExtension,
    SupportMeasureNotice, DecisionOutcome, ReviewDecisionKind,
)
from contracts.identity import MoveDetails, RegistrationStatus
from contracts.moves import MoveOutCertificate
from services.common import dv_rules as rules
from services.common.dv_rules import MeasureRuleViolation, RequestDecision, Verdict
from services.common.outbox import enqueue
from services.municipal_rrs import service
from services.municipal_rrs.domain import RegistryRuleViolation
from services.municipal_rrs.mapping import from_row
from services.municipal_rrs.models import (
    CertificateRequestRow, MeasureAlertRow, MeasureDeliveryRow, MoveReservationRow, Outbox, ResidentHistoryRow, ResidentRow,
    RestoredProtectionRow, SupportMeasurePersonRow, SupportMeasureRow,
)

#: set when deliveries are due now; the housekeeping loop waits on it between passes
WAKEUP = asyncio.Event()


class MeasureNotFound(Exception):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


def _measure(row: SupportMeasureRow) -> SupportMeasure:
    return SupportMeasure.model_validate_json(row.payload)


def _to_cs(session: AsyncSession, municipality_code: str, message) -> None:
    enqueue(session, Outbox, destination=service.cs_destination(municipality_code), key=message.resident_code, kind=message.kind, payload=message.model_dump_json())


# --- reading ----------------------------------------------------------------------------------------------


async def _row(session: AsyncSession, measure_id: uuid.UUID, *, for_update: bool = False) -> SupportMeasureRow:
    row = await session.get(SupportMeasureRow, measure_id, with_for_update=for_update)
    if row is None:
        raise MeasureNotFound(str(measure_id))
    return row


async def get_measure(session: AsyncSession, measure_id: uuid.UUID) -> SupportMeasure:
    return _measure(await _row(session, measure_id))


#: Asked at every move of anyone (is this person protected?): built once, its cache key with it.
_MEASURES_OF = (
    select(SupportMeasureRow).join(SupportMeasurePersonRow, SupportMeasurePersonRow.measure_id == SupportMeasureRow.measure_id)
    .where(SupportMeasurePersonRow.resident_code == bindparam("code")).order_by(SupportMeasureRow.updated_at.desc())
)


async def measures_of(session: AsyncSession, resident_code: str) -> list[SupportMeasure]:
    """Every measure protecting this person that this municipality holds (own or received), newest first."""
    rows = (await session.execute(_MEASURES_OF, {"code": resident_code})).scalars().all()
    return [_measure(r) for r in rows]


async def active_measures(session: AsyncSession, resident_code: str) -> list[SupportMeasure]:
    """Measures in force protecting this person — decided (active), or applied for and awaiting the decision —
    whether this municipality carries them or received them from another; what the counter must show in red."""
    return [m for m in await measures_of(session, resident_code) if rules.in_force(m)]


async def restored_protections(session: AsyncSession, codes: list[str], *, today: date | None = None) -> dict[str, RestoredProtectionRow]:
    """Protections restored by the disaster-recovery drill from the network's markers that still protect these persons
    (the measures' details were lost: staff re-enter them; see :func:`rules.restored_protection_in_force`)."""
    if not codes:
        return {}
    today = today or date.today()
    rows = (await session.execute(select(RestoredProtectionRow).where(RestoredProtectionRow.resident_code.in_(codes)))).scalars()
    return {r.resident_code: r for r in rows
            if rules.restored_protection_in_force(valid_until=r.valid_until, superseded=r.superseded_at is not None, today=today)}


async def restored_protection(session: AsyncSession, resident_code: str, *, today: date | None = None) -> RestoredProtectionRow | None:
    return (await restored_protections(session, [resident_code], today=today)).get(resident_code)


async def protected_codes(session: AsyncSession, codes: list[str]) -> set[str]:
    """Which of these persons a measure in force — or a protection restored from the network's marker — protects
    (for lists that must mark them, and for the online proxy rule)."""
    if not codes:
        return set()
    rows = (await session.execute(
        select(SupportMeasurePersonRow.resident_code).join(SupportMeasureRow, SupportMeasureRow.measure_id == SupportMeasurePersonRow.measure_id)
        .where(SupportMeasurePersonRow.resident_code.in_(codes), SupportMeasureRow.status.in_([s.value for s in rules.IN_FORCE]))
    )).scalars()
    return set(rows) | set(await restored_protections(session, codes))


async def _supersede_restored(session: AsyncSession, measure: SupportMeasure, *, staff: str) -> None:
    """A decided measure re-entered by staff replaces the protection the drill restored for the persons it covers."""
    await session.execute(update(RestoredProtectionRow).where(
        RestoredProtectionRow.resident_code.in_(measure.resident_codes), RestoredProtectionRow.superseded_at.is_(None),
    ).values(superseded_at=_now(), superseded_by=staff, superseded_by_measure=measure.measure_id))


async def online_proxy_refusal(session: AsyncSession, filer: str, members: list[str]) -> str | None:
    """No proxy filings online where a measure protects the filer or a member (see the rule)."""
    if not members:
        return None
    protected = await protected_codes(session, [filer, *members])
    return rules.online_proxy_refusal(filer_protected=filer in protected, protected_members=[m for m in members if m in protected], members=members)


async def list_measures(session: AsyncSession, *, status: MeasureStatus | None, expiring_within_days: int | None, today: date) -> list[SupportMeasure]:
    stmt = select(SupportMeasureRow).order_by(SupportMeasureRow.valid_until.asc().nulls_last(), SupportMeasureRow.updated_at.desc()).limit(1000)
    if status is not None:
        stmt = stmt.where(SupportMeasureRow.status == status.value)
    if expiring_within_days is not None:
        stmt = stmt.where(SupportMeasureRow.status == MeasureStatus.active.value, SupportMeasureRow.valid_until <= date.fromordinal(today.toordinal() + expiring_within_days))
    return [_measure(r) for r in (await session.execute(stmt)).scalars()]


async def _in_force_everywhere(session: AsyncSession) -> list[SupportMeasure]:
    """Every measure in force held here: a request by name is matched against all of them (the 本籍地 has no record of the person)."""
    rows = (await session.execute(select(SupportMeasureRow).where(SupportMeasureRow.status.in_([s.value for s in rules.IN_FORCE])))).scalars()
    return [_measure(r) for r in rows]


async def deliveries(session: AsyncSession, measure_id: uuid.UUID) -> list[MeasureDelivery]:
    await _row(session, measure_id)
    rows = (await session.execute(select(MeasureDeliveryRow).where(MeasureDeliveryRow.measure_id == measure_id)
                                  .order_by(MeasureDeliveryRow.revision, MeasureDeliveryRow.target_municipality_code))).scalars()
    return [MeasureDelivery(
        delivery_id=d.id, measure_id=d.measure_id, revision=d.revision, target_municipality_code=d.target_municipality_code, role=DeliveryRole(d.role),
        state=DeliveryState(d.state), attempts=d.attempts, first_sent_at=d.first_sent_at, last_sent_at=d.last_sent_at, next_attempt_at=d.next_attempt_at,
        acknowledged_at=d.acknowledged_at, staff_acknowledged_by=d.staff_acknowledged_by, staff_acknowledged_at=d.staff_acknowledged_at, last_error=d.last_error,
    ) for d in rows]


# --- storing ----------------------------------------------------------------------------------------------


async def _store(session: AsyncSession, measure: SupportMeasure, *, own: bool, received_from: str | None = None, previous: str | None = None) -> SupportMeasureRow:
    row = await session.get(SupportMeasureRow, measure.measure_id, with_for_update=True)
    values = dict(revision=measure.revision, status=measure.status.value, victim_code=measure.victim_code, own=own,
                  home_municipality_code=measure.home_municipality_code, valid_until=measure.valid_until, payload=measure.model_dump_json())
    if row is None:
        row = SupportMeasureRow(measure_id=measure.measure_id, previous_municipality_code=previous, received_from=received_from, **values)
        session.add(row)
        await session.flush()
    else:
        for key, value in values.items():
            setattr(row, key, value)
        if previous is not None:
            row.previous_municipality_code = previous
        if received_from is not None:
            row.received_from = received_from
    for code in measure.resident_codes:
        await session.execute(insert(SupportMeasurePersonRow).values(measure_id=measure.measure_id, resident_code=code).on_conflict_do_nothing())
    return row


async def _raise_alert(session: AsyncSession, *, dedupe_key: str, kind: AlertKind, resident_code: str, summary: str,
                       measure_id: uuid.UUID | None = None, delivery_id: uuid.UUID | None = None) -> None:
    """One alert per event, however often the event is seen."""
    await session.execute(insert(MeasureAlertRow).values(
        id=uuid.uuid4(), dedupe_key=dedupe_key[:120], kind=kind.value, measure_id=measure_id, delivery_id=delivery_id, resident_code=resident_code,
        summary=summary, raised_at=_now(),
    ).on_conflict_do_nothing(index_elements=["dedupe_key"]))


async def _resolve_delivery_alerts(session: AsyncSession, delivery_ids: list[uuid.UUID]) -> None:
    if delivery_ids:
        await session.execute(update(MeasureAlertRow).where(
            MeasureAlertRow.delivery_id.in_(delivery_ids), MeasureAlertRow.resolved_at.is_(None)).values(resolved_at=_now()))


async def _previous_municipality(session: AsyncSession, resident_code: str, municipality_code: str) -> str | None:
    """Where the person lived before: the origin of the 転出証明書情報 their last 転入 here used."""
    origin = (await session.execute(
        select(MoveReservationRow.origin_municipality_code).where(MoveReservationRow.resident_code == resident_code, MoveReservationRow.status == "used")
        .order_by(MoveReservationRow.received_at.desc()).limit(1)
    )).scalar_one_or_none()
    return origin if origin != municipality_code else None


async def _pending_destination(session: AsyncSession, resident_code: str) -> str | None:
    pending = (await session.execute(select(ResidentRow.pending_move).where(ResidentRow.resident_code == resident_code))).scalar_one_or_none()
    return MoveDetails.model_validate_json(pending).destination_municipality_code if pending else None


async def _commit_own(session: AsyncSession, measure: SupportMeasure, *, municipality_code: str, previous: str | None = None) -> SupportMeasure:
    """Store a new revision this municipality carries and send it: to the own CS at once, to every target as a delivery."""
    row = await _store(session, measure, own=True, previous=previous)
    targets = rules.delivery_targets(measure, previous_municipality_code=row.previous_municipality_code,
                                     destination_municipality_code=await _pending_destination(session, measure.victim_code))
    measure = rules.with_notified(measure, targets)
    row.payload = measure.model_dump_json()
    _to_cs(session, municipality_code, SupportMeasureNotice(
        municipality_code=municipality_code, destination_municipality_code=municipality_code, resident_code=measure.victim_code, measure=measure, sent_at=_now(),
    ))
    superseded = (await session.execute(
        update(MeasureDeliveryRow).where(MeasureDeliveryRow.measure_id == measure.measure_id, MeasureDeliveryRow.state.in_((DeliveryState.pending.value, DeliveryState.unreachable.value)))
        .values(state=DeliveryState.superseded.value).returning(MeasureDeliveryRow.id)
    )).scalars().all()
    await _resolve_delivery_alerts(session, list(superseded))  # the new revision's deliveries carry the duty on
    for code, role in targets.items():
        session.add(MeasureDeliveryRow(id=uuid.uuid4(), measure_id=measure.measure_id, revision=measure.revision, target_municipality_code=code,
                                       role=role.value, state=DeliveryState.pending.value, attempts=0, next_attempt_at=_now()))
    WAKEUP.set()
    return measure


# --- lifecycle ----------------------------------------------------------------------------------------------


async def apply(session: AsyncSession, body: SupportMeasureApplication, *, municipality_code: str, staff: str, today: date) -> SupportMeasure:
    """支援措置申出: the victim and the covered family must be registered here, in one household."""
    applied_on = body.applied_on or today
    if applied_on > today:
        raise MeasureRuleViolation("an application is recorded on or after the day it was made")
    victim = await service.load(session, body.victim)
    if victim.status is not RegistrationStatus.active:
        raise MeasureRuleViolation(f"the victim's record here is {victim.status.value}; apply where the person is registered")
    persons = [ProtectedPerson(resident_code=victim.resident_code, role=ProtectedRole.victim, name=victim.name, birth_date=victim.birth_date)]
    for code in body.family:
        member = await service.load(session, code)
        if member.status is not RegistrationStatus.active or member.household_id != victim.household_id:
            raise MeasureRuleViolation(f"{code} does not live in the victim's household here; only co-resident family members are covered")
        persons.append(ProtectedPerson(resident_code=member.resident_code, role=ProtectedRole.family, name=member.name, birth_date=member.birth_date))
    measure = SupportMeasure(
        measure_id=uuid.uuid4(), revision=1, protected=persons, kind=body.kind, basis=body.basis, basis_issuer=body.basis_issuer,
        basis_reference=body.basis_reference, perpetrators=body.perpetrators, status=MeasureStatus.applied, applied_on=applied_on,
        home_municipality_code=municipality_code, honseki_municipality_code=body.honseki_municipality_code,
        history=[MeasureStep(action=MeasureAction.applied, by=staff, at=_now(), municipality_code=municipality_code, note=body.note)],
    )
    return await _commit_own(session, measure, municipality_code=municipality_code, previous=await _previous_municipality(session, victim.resident_code, municipality_code))


async def _own(session: AsyncSession, measure_id: uuid.UUID, municipality_code: str) -> SupportMeasure:
    row = await _row(session, measure_id, for_update=True)
    if not row.own:
        raise MeasureRuleViolation(f"the measure is carried by {row.home_municipality_code}; only that municipality changes it")
    return _measure(row)


async def decide(session: AsyncSession, measure_id: uuid.UUID, body: SupportMeasureDecision, *, municipality_code: str, staff: str, today: date) -> SupportMeasure:
    measure = await _own(session, measure_id, municipality_code)
    if body.outcome is DecisionOutcome.approve:
        new = rules.approve(measure, valid_from=body.valid_from or today, today=today, by=staff, at=_now(), municipality_code=municipality_code, note=body.explanation)
        await _supersede_restored(session, new, staff=staff)
    else:
        new = rules.refuse(measure, by=staff, at=_now(), municipality_code=municipality_code, note=body.explanation)
    return await _commit_own(session, new, municipality_code=municipality_code)


async def extend(session: AsyncSession, measure_id: uuid.UUID, body: SupportMeasureExtension, *, municipality_code: str, staff: str, today: date) -> SupportMeasure:
    measure = await _own(session, measure_id, municipality_code)
    new = rules.extend(measure, filed_on=body.filed_on or today, basis=body.basis, basis_issuer=body.basis_issuer, basis_reference=body.basis_reference,
                       by=staff, at=_now(), municipality_code=municipality_code, note=body.note)
    await session.execute(update(MeasureAlertRow).where(  # the reminder did its job
        MeasureAlertRow.measure_id == measure_id, MeasureAlertRow.kind == AlertKind.expiring.value, MeasureAlertRow.resolved_at.is_(None)).values(resolved_at=_now()))
    return await _commit_own(session, new, municipality_code=municipality_code)


async def cancel(session: AsyncSession, measure_id: uuid.UUID, body: SupportMeasureCancellation, *, municipality_code: str, staff: str) -> SupportMeasure:
    measure = await _own(session, measure_id, municipality_code)
    new = rules.cancel(measure, requested_by=body.requested_by, by=staff, at=_now(), municipality_code=municipality_code, note=body.explanation)
    return await _commit_own(session, new, municipality_code=municipality_code)


# --- moves -----------------------------------------------------------------------------------------------


async def on_move_out(session: AsyncSession, resident_code: str, *, destination_code: str, municipality_code: str) -> list[SupportMeasure]:
    """転出: the measures protecting the person go with the 転出証明書情報, and as tracked deliveries to the destination."""
    carried = []
    for measure in await active_measures(session, resident_code):
        row = await _row(session, measure.measure_id, for_update=True)
        if row.own and destination_code != municipality_code:
            measure = rules.with_notified(measure, [destination_code])
            row.payload = measure.model_dump_json()
            pending = (await session.execute(select(MeasureDeliveryRow.id).where(
                MeasureDeliveryRow.measure_id == measure.measure_id, MeasureDeliveryRow.revision == measure.revision,
                MeasureDeliveryRow.target_municipality_code == destination_code))).first()
            if pending is None:
                session.add(MeasureDeliveryRow(id=uuid.uuid4(), measure_id=measure.measure_id, revision=measure.revision, target_municipality_code=destination_code,
                                               role=DeliveryRole.destination.value, state=DeliveryState.pending.value, attempts=0, next_attempt_at=_now()))
                WAKEUP.set()
        carried.append(measure)
    return carried


async def on_arrival(session: AsyncSession, origins: dict[str, str | None], *, municipality_code: str, staff: str) -> list[SupportMeasure]:
    """転入 of a victim: this municipality carries their measures on; the old home becomes the previous address."""
    taken = []
    for code, origin in origins.items():
        for measure in await active_measures(session, code):
            if measure.victim_code != code or measure.home_municipality_code == municipality_code:
                continue
            new = rules.take_over(measure, by=staff, at=_now(), municipality_code=municipality_code)
            taken.append(await _commit_own(session, new, municipality_code=municipality_code, previous=origin or measure.home_municipality_code))
    return taken


# --- what other municipalities send -------------------------------------------------------------------------


async def _take_measure(session: AsyncSession, measure: SupportMeasure, *, sender: str, municipality_code: str, known_municipality, how: str) -> str:
    """Keep a measure another municipality carries (its highest revision), raise it to staff, acknowledge it to its home."""
    held = await session.get(SupportMeasureRow, measure.measure_id, with_for_update=True)
    if measure.home_municipality_code == municipality_code:
        return f"support measure {measure.measure_id} r{measure.revision} ({how}) is carried here already"
    fresh = rules.is_newer(held.revision if held is not None else None, measure.revision)
    if fresh:
        was_own = held is not None and held.own
        await _store(session, measure, own=False, received_from=sender)
        if was_own:  # the person moved on: the new home carries the deliveries from now on
            stopped = (await session.execute(update(MeasureDeliveryRow).where(
                MeasureDeliveryRow.measure_id == measure.measure_id, MeasureDeliveryRow.state.in_((DeliveryState.pending.value, DeliveryState.unreachable.value)))
                .values(state=DeliveryState.superseded.value).returning(MeasureDeliveryRow.id))).scalars().all()
            await _resolve_delivery_alerts(session, list(stopped))
        last = measure.history[-1]
        names = "、".join(f"{p.name.family_name} {p.name.given_name or ''}".strip() for p in measure.protected)
        await _raise_alert(
            session, dedupe_key=f"received:{measure.measure_id}:{measure.revision}", kind=AlertKind.measure_received, resident_code=measure.victim_code,
            measure_id=measure.measure_id,
            summary=f"DV等支援措置 from {measure.home_municipality_code} ({how}): {names} — {measure.status.value}"
                    + (f" until {measure.valid_until.isoformat()}" if measure.valid_until else "") + f"; last step {last.action.value} by {last.by}",
        )
    home = measure.home_municipality_code
    if known_municipality(home):
        _to_cs(session, municipality_code, SupportMeasureAck(
            ack_id=uuid.uuid4(), municipality_code=municipality_code, destination_municipality_code=home, resident_code=measure.victim_code,
            measure_id=measure.measure_id, revision=measure.revision, stage=AckStage.received, acknowledged_at=_now(),
        ))
    return f"support measure {measure.measure_id} r{measure.revision} from {home} ({how})" + ("" if fresh else ": already held")


async def take_notice(session: AsyncSession, message, *, municipality_code: str, known_municipality) -> str:
    """A DV message pulled from the CS (called by :func:`services.municipal_rrs.moves.apply_notice`)."""
    if isinstance(message, SupportMeasureNotice):
        return await _take_measure(session, message.measure, sender=message.municipality_code, municipality_code=municipality_code,
                                   known_municipality=known_municipality, how=(message.role.value if message.role else "notice"))
    if isinstance(message, SupportMeasureAck):
        return await _take_ack(session, message)
    if isinstance(message, CertificateAttemptNotice):
        return await _take_attempt(session, message)
    raise TypeError(f"not a DV message: {message.kind}")


async def take_from_certificate(session: AsyncSession, certificate: MoveOutCertificate, *, municipality_code: str, known_municipality) -> str:
    """The 転出証明書情報 carries the measures: the new municipality shows them from the 転入予約 on."""
    parts = [await _take_measure(session, m, sender=certificate.municipality_code, municipality_code=municipality_code,
                                 known_municipality=known_municipality, how="転出証明書情報") for m in certificate.person.support_measures]
    return "; ".join(parts)


async def _take_ack(session: AsyncSession, ack: SupportMeasureAck) -> str:
    acked = (await session.execute(update(MeasureDeliveryRow).where(
        MeasureDeliveryRow.measure_id == ack.measure_id, MeasureDeliveryRow.target_municipality_code == ack.municipality_code,
        MeasureDeliveryRow.revision <= ack.revision, MeasureDeliveryRow.state.in_((DeliveryState.pending.value, DeliveryState.unreachable.value)),
    ).values(state=DeliveryState.acknowledged.value, acknowledged_at=ack.acknowledged_at, last_error=None).returning(MeasureDeliveryRow.id))).scalars().all()
    await _resolve_delivery_alerts(session, list(acked))
    if ack.stage is AckStage.staff_acknowledged:
        await session.execute(update(MeasureDeliveryRow).where(
            MeasureDeliveryRow.measure_id == ack.measure_id, MeasureDeliveryRow.target_municipality_code == ack.municipality_code,
            MeasureDeliveryRow.revision == ack.revision, MeasureDeliveryRow.staff_acknowledged_at.is_(None),
        ).values(staff_acknowledged_by=ack.by, staff_acknowledged_at=ack.acknowledged_at))
        return f"support measure {ack.measure_id} r{ack.revision}: seen by staff at {ack.municipality_code} ({ack.by})"
    return f"support measure {ack.measure_id} r{ack.revision} acknowledged by {ack.municipality_code}"


async def _take_attempt(session: AsyncSession, notice: CertificateAttemptNotice) -> str:
    """A request about one of ours at another municipality's counter (広域交付): recorded on the record, raised if refused."""
    if await session.get(CertificateRequestRow, notice.attempt_id) is None:
        session.add(CertificateRequestRow(
            id=notice.attempt_id, received_at=notice.at, type=notice.type.value, channel=RequestChannel.wide_area_at_other.value,
            subject=CertificateSubject(resident_code=notice.resident_code).model_dump_json(), subject_code=notice.resident_code,
            requester=notice.requester.model_dump_json(), state=notice.outcome, protected=bool(notice.measure_ids),
            measure_ids=json.dumps([str(m) for m in notice.measure_ids]), requesting_municipality_code=notice.requesting_municipality_code,
            handled_by=f"cs:{notice.requesting_municipality_code}", reason="answered by this municipality's CS (広域交付)",
        ))
    if notice.outcome == "refused":
        await _raise_alert(
            session, dedupe_key=f"attempt:{notice.attempt_id}", kind=AlertKind.request_refused, resident_code=notice.resident_code,
            measure_id=notice.measure_ids[0] if notice.measure_ids else None,
            summary=f"{notice.requester.name} asked {notice.requesting_municipality_code} for the {notice.type.value} of a protected person: refused",
        )
    return f"{notice.type.value} of {notice.resident_code} asked at {notice.requesting_municipality_code}: {notice.outcome}"


# --- housekeeping: expiry, reminders, deliveries -------------------------------------------------------------


async def expire_due(session: AsyncSession, *, municipality_code: str, today: date) -> int:
    rows = (await session.execute(select(SupportMeasureRow).where(
        SupportMeasureRow.own.is_(True), SupportMeasureRow.status == MeasureStatus.active.value, SupportMeasureRow.valid_until < today,
    ).with_for_update(skip_locked=True).limit(100))).scalars().all()
    for row in rows:
        await _commit_own(session, rules.expire(_measure(row), at=_now(), municipality_code=municipality_code), municipality_code=municipality_code)
    return len(rows)


async def remind_due(session: AsyncSession, *, today: date) -> int:
    rows = (await session.execute(select(SupportMeasureRow).where(
        SupportMeasureRow.own.is_(True), SupportMeasureRow.status == MeasureStatus.active.value,
        SupportMeasureRow.valid_until <= date.fromordinal(today.toordinal() + rules.REMINDER_DAYS),
    ).limit(500))).scalars().all()
    raised = 0
    for row in rows:
        measure = _measure(row)
        if rules.needs_reminder(measure, today):
            opens = rules.extension_opens_on(measure.valid_until)
            await _raise_alert(session, dedupe_key=f"expiring:{measure.measure_id}:{measure.valid_until.isoformat()}", kind=AlertKind.expiring,
                               resident_code=measure.victim_code, measure_id=measure.measure_id,
                               summary=f"DV等支援措置 ends on {measure.valid_until.isoformat()}: ask the victim about an extension (possible from {opens.isoformat()})")
            raised += 1
    return raised


async def send_due(session: AsyncSession, *, municipality_code: str, known_municipality, now: datetime) -> int:
    """Send (or send again) every due delivery; raise those that went unacknowledged, or cannot go at all."""
    due = (await session.execute(select(MeasureDeliveryRow).where(
        MeasureDeliveryRow.state.in_((DeliveryState.pending.value, DeliveryState.unreachable.value)), MeasureDeliveryRow.next_attempt_at <= now,
    ).order_by(MeasureDeliveryRow.next_attempt_at).limit(100).with_for_update(skip_locked=True))).scalars().all()
    for d in due:
        row = await session.get(SupportMeasureRow, d.measure_id)
        if row is None or not row.own or row.revision != d.revision:
            d.state = DeliveryState.superseded.value
            continue
        measure = _measure(row)
        d.attempts += 1
        d.next_attempt_at = now + rules.next_attempt_after(d.attempts)
        if not known_municipality(d.target_municipality_code):
            d.state, d.last_error = DeliveryState.unreachable.value, f"{d.target_municipality_code} is not on the network"
            await _raise_alert(session, dedupe_key=f"delivery:{d.id}", kind=AlertKind.delivery_failed, resident_code=measure.victim_code,
                               measure_id=measure.measure_id, delivery_id=d.id,
                               summary=f"DV等支援措置 r{d.revision} cannot reach the {d.role} municipality {d.target_municipality_code}: "
                                       "it is not on the network — inform it by other means; retried until it acknowledges")
            continue
        if d.attempts > 1:
            d.last_error = f"not acknowledged after {d.attempts - 1} sending(s); sent again"
            await _raise_alert(session, dedupe_key=f"delivery:{d.id}", kind=AlertKind.delivery_failed, resident_code=measure.victim_code,
                               measure_id=measure.measure_id, delivery_id=d.id,
                               summary=f"DV等支援措置 r{d.revision} not acknowledged by the {d.role} municipality {d.target_municipality_code}; "
                                       "sent again and retried until it acknowledges")
        d.first_sent_at = d.first_sent_at or now
        d.last_sent_at = now
        _to_cs(session, municipality_code, SupportMeasureNotice(
            municipality_code=municipality_code, destination_municipality_code=d.target_municipality_code, resident_code=measure.victim_code,
            role=DeliveryRole(d.role), attempt=d.attempts, measure=measure, sent_at=now,
        ))
    return len(due)


# --- alerts --------------------------------------------------------------------------------------------------


def _is_open(row: MeasureAlertRow) -> bool:
    if row.kind == AlertKind.delivery_failed.value:
        return row.resolved_at is None
    return row.acknowledged_at is None and row.resolved_at is None


def _alert_view(row: MeasureAlertRow) -> SupportMeasureAlert:
    return SupportMeasureAlert(
        alert_id=row.id, kind=AlertKind(row.kind), measure_id=row.measure_id, resident_code=row.resident_code, summary=row.summary, raised_at=row.raised_at,
        acknowledged_by=row.acknowledged_by, acknowledged_at=row.acknowledged_at, resolved_at=row.resolved_at, open=_is_open(row),
    )


async def alerts(session: AsyncSession, *, include_closed: bool, resident_code: str | None = None) -> list[SupportMeasureAlert]:
    stmt = select(MeasureAlertRow).order_by(MeasureAlertRow.raised_at.desc()).limit(1000)
    if resident_code is not None:
        stmt = stmt.where(MeasureAlertRow.resident_code == resident_code)
    views = [_alert_view(r) for r in (await session.execute(stmt)).scalars()]
    return views if include_closed else [v for v in views if v.open]


class AlertNotFound(Exception):
    pass


async def acknowledge_alert(session: AsyncSession, alert_id: uuid.UUID, *, staff: str, municipality_code: str, known_municipality=lambda code: True) -> SupportMeasureAlert:
    """Staff saw it. A received measure's home hears who saw it; a failed delivery stays open until it is delivered.

    (The home of a received measure sent it over the network, so it is on the network; ``known_municipality`` double-checks.)
    """
    row = await session.get(MeasureAlertRow, alert_id, with_for_update=True)
    if row is None:
        raise AlertNotFound(str(alert_id))
    if row.acknowledged_at is None:
        row.acknowledged_by, row.acknowledged_at = staff, _now()
        if row.kind == AlertKind.measure_received.value and row.measure_id is not None:
            held = await session.get(SupportMeasureRow, row.measure_id)
            revision = int(row.dedupe_key.rsplit(":", 1)[1])
            if held is not None and not held.own and known_municipality(held.home_municipality_code):
                _to_cs(session, municipality_code, SupportMeasureAck(
                    ack_id=uuid.uuid4(), municipality_code=municipality_code, destination_municipality_code=held.home_municipality_code,
                    resident_code=held.victim_code, measure_id=row.measure_id, revision=revision, stage=AckStage.staff_acknowledged, by=staff,
                    acknowledged_at=row.acknowledged_at,
                ))
    return _alert_view(row)


# --- certificate requests -----------------------------------------------------------------------------------


#: where a record of each type is found at the register
_STATUSES = {
    CertificateType.juminhyo_copy: ("active", "moving_out"),
    CertificateType.inspection: ("active", "moving_out"),
    CertificateType.removed_record: ("removed", "deceased"),
    CertificateType.koseki_fuhyo: ("active", "moving_out", "removed", "deceased"),
}
#: the types another municipality may issue for a person registered elsewhere (広域交付), to the person or their household
WIDE_AREA_TYPES = (CertificateType.juminhyo_copy, CertificateType.koseki_fuhyo)
WIDE_AREA_RELATIONS = (RequesterRelation.self_, RequesterRelation.household_member)


@dataclass
class Evaluation:
    """A request checked against this register: what it found, what protects it, what the rules say."""

    request: CertificateRequest
    subject: ResidentRow | None
    measures: list[SupportMeasure]
    decision: RequestDecision
    restored: bool = False  # a protection restored from the network's marker protects the subject (details unknown)

    @property
    def protected(self) -> bool:
        return bool(self.measures) or self.restored

    @property
    def goes_wide_area(self) -> bool:
        """Not here, not refused here, and a kind of request another municipality may answer (広域交付)."""
        return (self.subject is None and self.decision.verdict is Verdict.not_found and self.request.type in WIDE_AREA_TYPES
                and self.request.requester.relation in WIDE_AREA_RELATIONS)

    @property
    def asks_the_network(self) -> bool:
        """Every request of a kind 広域交付 may answer that is not issued here asks the network in the background — not
        only those that go 広域交付: a refused perpetrator, a review, and a request about nobody then do the same work,
        and the home of a protected person hears of the attempt. Only a ``goes_wide_area`` request takes the answer."""
        return (self.decision.verdict is not Verdict.issue and self.request.type in WIDE_AREA_TYPES
                and self.request.requester.relation in WIDE_AREA_RELATIONS)


async def _find_subject(session: AsyncSession, subject: CertificateSubject, certificate_type: CertificateType) -> tuple[ResidentRow | None, bool]:
    """(the record, whether several records matched)."""
    statuses = _STATUSES[certificate_type]
    if subject.resident_code is not None:
        row = await session.get(ResidentRow, subject.resident_code)
        found = row if row is not None and row.status in statuses else None
        if found is not None and subject.birth_date is not None and found.birth_date != subject.birth_date:
            found = None
        return found, False
    candidates = (await session.execute(select(ResidentRow).where(ResidentRow.birth_date == subject.birth_date, ResidentRow.status.in_(statuses)))).scalars().all()
    matches = [r for r in candidates if rules.normalise_name(f"{r.family_name}{r.given_name or ''}") == rules.normalise_name(subject.name)]
    if certificate_type is CertificateType.koseki_fuhyo:
        matches = [r for r in matches if r.honseki]
    return (matches[0] if len(matches) == 1 else None), len(matches) > 1


#: looked up when there is no subject, so that a request about nobody runs the same queries as one about somebody
_NOBODY_CODE = "00000000000"
_NO_HOUSEHOLD = uuid.UUID(int=0)


async def evaluate(session: AsyncSession, request: CertificateRequest) -> Evaluation:
    """Check a request against this register. The same queries run whether the subject exists, is protected or
    not (the answer's timing must not tell them apart): the subject, the measures, a restored protection, the household."""
    subject, ambiguous = await _find_subject(session, request.subject, request.type)
    code = subject.resident_code if subject is not None else request.subject.resident_code
    name = f"{subject.family_name}{subject.given_name or ''}" if subject is not None else request.subject.name
    birth = subject.birth_date if subject is not None else request.subject.birth_date
    if code is not None:  # protected persons are named by resident code in every copy of a measure
        measures = await active_measures(session, code)
    else:  # by name and birth date, and no record here (e.g. at the 本籍地): every measure held is checked
        measures = [m for m in await _in_force_everywhere(session) if rules.protects_subject(m, resident_code=None, name=name, birth_date=birth)]
    restored = await restored_protection(session, subject.resident_code if subject is not None else _NOBODY_CODE) is not None and subject is not None
    requester = request.requester
    household_codes = set((await session.execute(select(ResidentRow.resident_code).where(
        ResidentRow.household_id == (subject.household_id if subject is not None else _NO_HOUSEHOLD), ResidentRow.status == "active"))).scalars())
    in_household = principal_ok = False
    if subject is not None:
        in_household = requester.resident_code is not None and requester.resident_code in household_codes
        principal = requester.principal
        principal_ok = principal is not None and principal.resident_code is not None and (principal.resident_code == subject.resident_code or principal.resident_code in household_codes)
    decision = rules.decide_request(
        requester=requester, measures=measures, subject_found=subject is not None, requester_is_subject=subject is not None and requester.resident_code == subject.resident_code,
        requester_in_household=in_household, principal_is_subject_or_household=principal_ok, restored_protection=restored,
    )
    if ambiguous and decision.verdict is Verdict.not_found:
        decision = RequestDecision(Verdict.review, "several records match the name and birth date", decision.measure_ids)
    return Evaluation(request=request, subject=subject, measures=measures, decision=decision, restored=restored)


async def document_for(session: AsyncSession, row: ResidentRow, certificate_type: CertificateType, *, municipality_code: str) -> CertificateDocument:
    """The document as issued: the items of the type asked for, from the record."""
    resident = from_row(row)
    head = await service._head_of(session, row.household_id)
    entry = dict(name=resident.name, birth_date=resident.birth_date, sex=resident.sex, status=resident.status)
    if certificate_type is CertificateType.inspection:
        entry |= dict(address=resident.address.text)
    elif certificate_type is CertificateType.koseki_fuhyo:
        records = (await session.execute(select(ResidentHistoryRow.record).where(ResidentHistoryRow.resident_code == row.resident_code)
                                         .order_by(ResidentHistoryRow.sequence))).scalars()
        addresses = list(dict.fromkeys(json.loads(r)["address"]["text"] for r in records))
        entry |= dict(honseki=row.honseki, hittousha=row.hittousha, address_history=addresses, address=resident.address.text)
    else:
        entry |= dict(address=resident.address.text, became_resident_on=resident.became_resident_on, previous_address=resident.previous_address,
                      relationship=resident.relationship, head_of_household=f"{head.family_name} {head.given_name or ''}".strip() if head else None,
                      honseki=row.honseki, hittousha=row.hittousha)
        if certificate_type is CertificateType.removed_record:
            entry |= dict(removed_on=row.last_change_date)
    return CertificateDocument(type=certificate_type, issued_by=municipality_code, issued_at=_now(), entries=[CertificateEntry(**entry)])


async def record_request(session: AsyncSession, evaluation: Evaluation, *, state: RequestState, channel: RequestChannel, staff: str, reason: str,
                         document: CertificateDocument | None = None, request_id: uuid.UUID | None = None, extra_measure_ids: list[str] = (),
                         requesting_municipality_code: str | None = None) -> CertificateRequestRow:
    """Every attempt, whatever its outcome. A perpetrator's attempt (``refusal_pending``) is raised to staff by the
    housekeeping loop (:func:`raise_refusal_alerts`), not here: the request's own work is the same whatever the verdict."""
    request = evaluation.request
    ids = list(dict.fromkeys([*evaluation.decision.measure_ids, *extra_measure_ids]))
    subject_code = evaluation.subject.resident_code if evaluation.subject is not None else (
        request.subject.resident_code or (evaluation.measures[0].victim_code if evaluation.measures else None))
    row = CertificateRequestRow(
        id=request_id or uuid.uuid4(), received_at=_now(), type=request.type.value, channel=channel.value, subject=request.subject.model_dump_json(),
        subject_code=subject_code, requester=request.requester.model_dump_json(), state=state.value, reason=reason, protected=bool(ids) or evaluation.restored,
        measure_ids=json.dumps(ids), handled_by=staff, document=document.model_dump_json() if document is not None else None,
        requesting_municipality_code=requesting_municipality_code,
    )
    session.add(row)
    await session.flush()
    return row


@dataclass(frozen=True)
class RequestResult:
    """What became of a request at the counter. ``answer`` is all the requester may be told: the document, or
    "under review" — for every request not issued at once, whoever asks about whomever (:func:`rules.requester_answer`).
    ``asks_home``: the network is to be asked in the background (:func:`complete_wide_area`; see ``Evaluation.asks_the_network``)."""

    request_id: uuid.UUID
    state: RequestState
    document: CertificateDocument | None = None
    asks_home: bool = False

    @property
    def answer(self) -> rules.Answer:
        return rules.requester_answer(self.state)


async def request_certificate(sessions, request: CertificateRequest, *, staff: str, municipality_code: str) -> RequestResult:
    """A certificate request at this counter, recorded whatever happens, answered before anyone else is asked.

    Issued at once only when this register has the record and the rules serve
    the requester. Everything else — review, a refusal by the DV rules, no
    record — is recorded and answered "under review" in one transaction of
    the same shape. A request another municipality may answer (広域交付) is
    recorded ``asking_home`` and completed by :func:`complete_wide_area`
    after the answer went out, so how far the question travels (to the home
    CS, or nowhere because nobody has the person) never shows in the time
    the requester waits.
    """
    request_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        evaluation = await evaluate(session, request)
        decision = evaluation.decision
        state = rules.state_after_request(decision, wide_area=evaluation.goes_wide_area)
        document = None
        if state is RequestState.issued:
            document = await document_for(session, evaluation.subject, request.type, municipality_code=municipality_code)
        asking = state is RequestState.asking_home
        await record_request(session, evaluation, state=state, channel=RequestChannel.wide_area if asking else RequestChannel.counter, staff=staff,
                             reason="asking the home municipality (広域交付)" if asking else decision.reason, document=document, request_id=request_id,
                             requesting_municipality_code=municipality_code if asking else None)
    return RequestResult(request_id, state, document, asks_home=evaluation.asks_the_network)


async def complete_wide_area(sessions, request_id: uuid.UUID, request: CertificateRequest, *, ask_home) -> RequestState | None:
    """広域交付, after the requester was answered: ask the home municipality through the own CS and record its answer.

    ``ask_home(request, request_id) -> WideAreaAnswer | None`` (None: it could
    not be asked). A document ends the request (the outcome gives it); the
    home's refusal of a perpetrator, "no record" and a failure go to the review
    queue (:func:`rules.state_after_home_answer`), where the requester's
    outcome stays "under review" until a reviewer closes it. Returns the new
    state, or None when the request was no longer waiting for the home.
    """
    answer = await ask_home(request, request_id)
    async with sessions() as session, session.begin():
        row = await session.get(CertificateRequestRow, request_id, with_for_update=True)
        if row is not None and row.state == RequestState.refusal_pending.value and answer is not None:
            row.reason = f"{row.reason}; the home ({answer.home_municipality_code or 'none found'}) answered {answer.outcome}"
            return None  # refused here: nothing the home says changes that
        if row is None or row.state != RequestState.asking_home.value:
            return None
        state = rules.state_after_home_answer(answer.outcome if answer is not None else None)
        row.state = state.value
        if answer is None:
            row.reason = "the home municipality could not be asked (広域交付): ask the requester to come again, or ask the home by other means"
            return state
        row.reason = f"answered by {answer.home_municipality_code or 'the network'}: {answer.outcome}" + {
            "refused": " (the home's DV rules refuse the requester: named as a perpetrator)",
            "not_found": " (no record of the person on the network, or the home would not serve the requester)",
        }.get(answer.outcome, "")
        if answer.outcome == "refused":
            row.protected = True  # raised to staff by the housekeeping loop, as every refusal_pending request
        if answer.document is not None and state is RequestState.issued:
            row.document = answer.document.model_dump_json()
        return state


async def raise_refusal_alerts(session: AsyncSession) -> int:
    """Raise a ``request_refused`` alert for every request the DV rules refused that has none yet (housekeeping: within
    a second of the request, and outside the request's own work, so that a refusal takes no longer to answer)."""
    key = literal("attempt:") + cast(CertificateRequestRow.id, String)
    rows = (await session.execute(select(CertificateRequestRow).where(
        CertificateRequestRow.state == RequestState.refusal_pending.value, CertificateRequestRow.subject_code.is_not(None),
        ~exists().where(MeasureAlertRow.dedupe_key == key),
    ).limit(100))).scalars().all()
    for row in rows:
        ids = json.loads(row.measure_ids)
        where = f" (広域交付 at {row.requesting_municipality_code})" if row.channel == RequestChannel.wide_area.value else ""
        await _raise_alert(session, dedupe_key=f"attempt:{row.id}", kind=AlertKind.request_refused, resident_code=row.subject_code,
                           measure_id=uuid.UUID(ids[0]) if ids else None,
                           summary=f"{Requester.model_validate_json(row.requester).name} ({Requester.model_validate_json(row.requester).relation.value}) "
                                   f"asked for the {row.type} of a protected person{where}: refused (the requester was told \"under review\")")
    return len(rows)


#: a 広域交付 still asking after this long was interrupted (e.g. a restart): housekeeping asks again
STALE_ASK = 60


async def stale_wide_area(session: AsyncSession, *, now: datetime) -> list[tuple[uuid.UUID, CertificateRequest]]:
    """Requests whose background ask of the home was interrupted, to ask again."""
    rows = (await session.execute(select(CertificateRequestRow).where(
        CertificateRequestRow.state == RequestState.asking_home.value, CertificateRequestRow.received_at < now - timedelta(seconds=STALE_ASK),
    ).limit(50))).scalars().all()
    return [(r.id, CertificateRequest(type=CertificateType(r.type), subject=CertificateSubject.model_validate_json(r.subject),
                                      requester=Requester.model_validate_json(r.requester))) for r in rows]


def request_view(row: CertificateRequestRow) -> CertificateRequestView:
    return CertificateRequestView(
        request_id=row.id, received_at=row.received_at, type=CertificateType(row.type), channel=RequestChannel(row.channel),
        subject=CertificateSubject.model_validate_json(row.subject), subject_resident_code=row.subject_code, requester=Requester.model_validate_json(row.requester),
        state=RequestState(row.state), reason=row.reason, protected=row.protected, measure_ids=[uuid.UUID(m) for m in json.loads(row.measure_ids)],
        requesting_municipality_code=row.requesting_municipality_code, handled_by=row.handled_by, decided_by=row.decided_by, decided_at=row.decided_at,
        decision_reason=row.decision_reason,
    )


async def requests_about(session: AsyncSession, resident_code: str) -> list[CertificateRequestView]:
    rows = (await session.execute(select(CertificateRequestRow).where(CertificateRequestRow.subject_code == resident_code)
                                  .order_by(CertificateRequestRow.received_at.desc()).limit(500))).scalars()
    return [request_view(r) for r in rows]


async def review_queue(session: AsyncSession) -> list[CertificateRequestView]:
    """Requests waiting for a reviewer: those the DV rules refuse first (to confirm), then about protected persons, oldest first."""
    rows = (await session.execute(select(CertificateRequestRow).where(CertificateRequestRow.state.in_([s.value for s in rules.REVIEWABLE]))
                                  .order_by((CertificateRequestRow.state == RequestState.refusal_pending.value).desc(), CertificateRequestRow.protected.desc(),
                                            CertificateRequestRow.received_at).limit(500))).scalars()
    return [request_view(r) for r in rows]


class RequestNotFound(Exception):
    pass


async def decide_review(session: AsyncSession, request_id: uuid.UUID, *, decision, reason: str, staff: str, municipality_code: str) -> CertificateRequestRow:
    """A reviewer's decision; protection is checked again now (a measure may have been decided since the request came)."""
    row = await session.get(CertificateRequestRow, request_id, with_for_update=True)
    if row is None:
        raise RequestNotFound(str(request_id))
    if row.state not in {s.value for s in rules.REVIEWABLE}:
        raise MeasureRuleViolation(f"the request is {row.state}, not under review")
    refused_by_rule = row.state == RequestState.refusal_pending.value
    request = CertificateRequest(type=CertificateType(row.type), subject=CertificateSubject.model_validate_json(row.subject), requester=Requester.model_validate_json(row.requester))
    now_ = await evaluate(session, request)
    ids = list(dict.fromkeys([*json.loads(row.measure_ids), *now_.decision.measure_ids]))
    row.protected, row.measure_ids = bool(ids) or now_.restored or row.protected, json.dumps(ids)
    if decision is ReviewDecisionKind.issue:
        if refusal := rules.review_issue_refusal(protected=row.protected, subject_found=now_.subject is not None, refused_by_rule=refused_by_rule):
            raise MeasureRuleViolation(refusal)
        document = await document_for(session, now_.subject, request.type, municipality_code=municipality_code)
        row.state, row.document = RequestState.issued.value, document.model_dump_json()
    else:
        row.state = (RequestState.refused if now_.subject is not None else RequestState.not_found).value
    row.decided_by, row.decided_at, row.decision_reason = staff, _now(), reason
    return row


def requester_answer(row: CertificateRequestRow) -> rules.Answer:
    """What the requester hears at the outcome: the document, "under review", or "not issued" — never why."""
    return rules.requester_answer(RequestState(row.state))


__all__ = [
    "WAKEUP", "MeasureNotFound", "MeasureRuleViolation", "RegistryRuleViolation", "active_measures", "measures_of", "restored_protections",
    "restored_protection", "protected_codes", "get_measure", "list_measures",
    "apply", "decide", "extend", "cancel", "on_move_out", "on_arrival", "take_notice", "take_from_certificate", "expire_due", "remind_due", "send_due",
    "alerts", "acknowledge_alert", "evaluate", "record_request", "document_for", "requests_about", "review_queue", "decide_review", "requester_answer",
    "request_certificate", "complete_wide_area", "stale_wide_area", "raise_refusal_alerts",
]
