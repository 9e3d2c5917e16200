"""Moves at the resident register: 転出, 転出取消, 転入 (特例転入), and what other municipalities tell us.

Each use case is one transaction. A 転出 writes, per person, the record,
its history, the 本人確認情報 change and — for a move within Japan — the
転出証明書情報 for the destination, all to the outbox for the own CS. The
register never calls the network: notices from other municipalities are
pulled from the CS (:func:`apply_notice`), in the CS's order, each applied
once with the cursor in the same transaction.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime

from sqlalchemy import Date, Uuid, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.moves import (
    CsNotice, MoveInFiling, MoveInNotice, MoveInReply, MoveOutCancellation, MoveOutCertificate, MoveOutFiling,
    MoveOutWithdrawal, TransferredPerson,
)
from contracts.online import OnlineConfirmationNotice, OnlineFilingNotice
from contracts.register import HouseholdPlacement, Relationship, ResidentRecord
from services.common.outbox import enqueue
from opentelemetry import trace

from services.common.telemetry import context_from_traceparent, links_to, tracer
from services.municipal_rrs.domain import RegistryRuleViolation, Resident, closable_together
from services.municipal_rrs.models import Household, IncomingNoticeRow, MoveReservationRow, Outbox, ResidentRow
from services.municipal_rrs.mapping import from_row
from services.municipal_rrs.service import Saving, _household_for, cs_destination, load, resident_row, resident_rows_for_update, save, save_many
from services.municipal_rrs import dv
from contracts.dv import CertificateAttemptNotice, SupportMeasureAck, SupportMeasureNotice


class NoMatchingMoveOut(Exception):
    """A 転入届 names a person for whom no 転出証明書情報 is pending here."""

    def __init__(self, resident_codes: list[str]):
        super().__init__(f"no 転出証明書情報 pending for {', '.join(resident_codes)}")
        self.resident_codes = resident_codes


def certificate_id_for(procedure_id: uuid.UUID, resident_code: str) -> uuid.UUID:
    """One certificate per person of a procedure, recomputable when the 転出 is cancelled."""
    return uuid.uuid5(procedure_id, resident_code)


def _to_cs(session: AsyncSession, municipality_code: str, message) -> None:
    enqueue(session, Outbox, destination=cs_destination(municipality_code), key=message.resident_code, kind=message.kind, payload=message.model_dump_json())


# --- 転出 -------------------------------------------------------------------------------------------------


async def file_move_out(session: AsyncSession, filing: MoveOutFiling, *, municipality_code: str, known_municipality, staff: str, today: date) -> list[ResidentRecord]:
    """転出届 for one or more members of a household, in one procedure."""
    destination_code = filing.destination.municipality_code if filing.destination else None
    if destination_code is not None and not known_municipality(destination_code):
        raise RegistryRuleViolation(f"municipality {destination_code} is not on the network")
    procedure_id = uuid.uuid4()
    movers = [await load(session, code, for_update=True) for code in filing.resident_codes]
    await _keep_households_headed(session, movers, filing.remaining_head, staff=staff)
    records = []
    for resident in movers:
        was_head = resident.relationship is Relationship.head
        event = resident.move_out(
            procedure_id=procedure_id, destination_code=destination_code, destination_country=filing.destination_country,
            planned_date=filing.planned_date, notified_date=filing.notified_date, today=today,
        )
        record, change = await save(session, resident, event, staff=staff, new=False, left_household=resident.household_id)
        records.append(record)
        if destination_code is not None:
            measures = await dv.on_move_out(session, resident.resident_code, destination_code=destination_code, municipality_code=municipality_code)
            _to_cs(session, municipality_code, MoveOutCertificate(
                certificate_id=certificate_id_for(procedure_id, resident.resident_code), procedure_id=procedure_id,
                municipality_code=municipality_code, destination_municipality_code=destination_code, resident_code=resident.resident_code,
                planned_date=filing.planned_date, persons_in_procedure=len(movers), issued_at=datetime.now(UTC),
                person=TransferredPerson(
                    change=change, relationship=resident.relationship, was_head=was_head, family_register=resident.family_register,
                    foreign_resident=resident.foreign_resident, former_surname_kana=resident.former_surname_kana, support_measures=measures,
                ),
            ))
    return records


async def _keep_households_headed(session: AsyncSession, movers: list[Resident], remaining_head: str | None, *, staff: str) -> None:
    """A household that stays behind keeps a head: if its head leaves, the filing names the stayer who takes over."""
    moving = {r.resident_code for r in movers}
    for household_id in {r.household_id for r in movers if r.relationship is Relationship.head}:
        stayers = (await session.execute(select(ResidentRow.resident_code).where(
            ResidentRow.household_id == household_id, ResidentRow.status == "active", ResidentRow.resident_code.not_in(moving)))).scalars().all()
        if not stayers:
            continue
        if remaining_head not in stayers:
            raise RegistryRuleViolation("the head of household moves out and members stay: name one of them as remaining_head")
        new_head = await load(session, remaining_head, for_update=True)
        event = new_head.change_household(_placement_as_head(household_id), household_id=household_id)
        await save(session, new_head, event, staff=staff, new=False)


def _placement_as_head(household_id: uuid.UUID):
    from contracts.register import ChangeHousehold

    return ChangeHousehold(household=HouseholdPlacement(household_id=household_id, relationship=Relationship.head), change_date=date.today())


async def cancel_move_out(session: AsyncSession, resident_code: str, cmd: MoveOutCancellation, *, municipality_code: str, staff: str) -> ResidentRecord:
    """転出取消: the record is active again; the destination's certificate is withdrawn."""
    resident = await load(session, resident_code, for_update=True)
    event = resident.cancel_move_out(cmd)
    record, _ = await save(session, resident, event, staff=staff, new=False)
    move = event.move
    if move is not None and move.destination_municipality_code is not None:
        _to_cs(session, municipality_code, MoveOutWithdrawal(
            certificate_id=certificate_id_for(move.procedure_id, resident_code), municipality_code=municipality_code,
            destination_municipality_code=move.destination_municipality_code, resident_code=resident_code, withdrawn_at=datetime.now(UTC),
        ))
    return record


# --- 転入 -------------------------------------------------------------------------------------------------


# Statements of every 転入 and every notice, built once (docs/architecture.md, "Database access on the hot path").
_PENDING_CERTIFICATE = (
    select(MoveReservationRow).where(MoveReservationRow.resident_code == bindparam("code"), MoveReservationRow.status == "pending")
    .order_by(MoveReservationRow.received_at.desc()).limit(1).with_for_update()
)
_LAST_NOTICE_SEQUENCE = select(func.coalesce(func.max(IncomingNoticeRow.cs_sequence), 0))


async def pending_certificate(session: AsyncSession, resident_code: str) -> MoveReservationRow | None:
    return (await session.execute(_PENDING_CERTIFICATE, {"code": resident_code})).scalar_one_or_none()


async def file_move_in(session: AsyncSession, filing: MoveInFiling, *, municipality_code: str, staff: str, today: date) -> list[ResidentRecord]:
    """転入届 from pending 転出証明書情報: all persons in one transaction, into one household."""
    reservations = {p.resident_code: await pending_certificate(session, p.resident_code) for p in filing.persons}
    missing = [code for code, row in reservations.items() if row is None]
    if missing:
        raise NoMatchingMoveOut(missing)
    certificates = {code: MoveOutCertificate.model_validate_json(row.payload) for code, row in reservations.items()}
    relationships = {p.resident_code: p.relationship or _relationship_on_arrival(certificates[p.resident_code]) for p in filing.persons}
    heads = [code for code, rel in relationships.items() if rel is Relationship.head]
    if filing.household_id is None:
        if len(filing.persons) == 1 and not heads:
            relationships[filing.persons[0].resident_code] = Relationship.head
            heads = [filing.persons[0].resident_code]
        if len(heads) != 1:
            raise RegistryRuleViolation("a new household needs exactly one 世帯主 among the persons moving in")
        household = Household(id=uuid.uuid4())
        session.add(household)
        await session.flush()
        household_id = household.id
    else:
        household_id = await _household_for(session, HouseholdPlacement(household_id=filing.household_id, relationship=Relationship.head if heads else Relationship.relative))
        if len(heads) > 1:
            raise RegistryRuleViolation("a household has one 世帯主")
    procedure_id = uuid.uuid4()
    records = []
    for person in filing.persons:
        code = person.resident_code
        existing = await resident_row(session, code, for_update=True)
        if existing is not None and existing.status in ("active", "moving_out"):
            raise RegistryRuleViolation(f"{code} is already on this register ({existing.status})")
        resident, event = Resident.arrive(
            certificates[code], municipality_code=municipality_code, new_address=filing.new_address, household_id=household_id,
            relationship=relationships[code], move_date=filing.move_date, notified_date=filing.notified_date, procedure_id=procedure_id,
            today=today, sequence_before=existing.sequence if existing is not None else 0,
        )
        record, _ = await save(session, resident, event, staff=staff, new=existing is None)
        reservations[code].status = "used"
        records.append(record)
    # a victim who moved in: this municipality carries their support measures on (R-DV-1)
    origins = {code: None if c.from_abroad else c.municipality_code for code, c in certificates.items()}
    await dv.on_arrival(session, origins, municipality_code=municipality_code, staff=staff)
    return records


def _relationship_on_arrival(certificate: MoveOutCertificate) -> Relationship:
    """Without a new 続柄, the one at the origin is kept (the head stays head)."""
    return Relationship.head if certificate.person.was_head else certificate.person.relationship


async def keep_certificate(session: AsyncSession, certificate: MoveOutCertificate) -> None:
    """Keep a 転入予約 once. The same certificate can come twice at the same moment (国外からの転入: the counter's
    request and the notice the CS hands over for it), so the insert is one that does nothing when it is already kept."""
    await session.execute(_KEEP_RESERVATION, {
        "certificate_id": certificate.certificate_id, "procedure_id": certificate.procedure_id, "resident_code": certificate.resident_code,
        "origin": certificate.municipality_code, "planned_date": certificate.planned_date, "payload": certificate.model_dump_json(),
    })


#: Written once as text: the PostgreSQL dialect's INSERT … ON CONFLICT is never cached by SQLAlchemy.
_KEEP_RESERVATION = text(
    f"INSERT INTO {MoveReservationRow.__tablename__} (certificate_id, procedure_id, resident_code, origin_municipality_code, planned_date, status, payload)"
    " VALUES (:certificate_id, :procedure_id, :resident_code, :origin, :planned_date, 'pending', :payload) ON CONFLICT (certificate_id) DO NOTHING"
).bindparams(bindparam("certificate_id", type_=Uuid), bindparam("procedure_id", type_=Uuid), bindparam("planned_date", type_=Date))


# --- notices from other municipalities ---------------------------------------------------------------------


async def last_notice_sequence(session: AsyncSession) -> int:
    return (await session.execute(_LAST_NOTICE_SEQUENCE)).scalar_one()


async def take_notices(session: AsyncSession, notices: list[CsNotice], *, municipality_code: str, known_municipality, today: date) -> None:
    """The notices of one pull, in the caller's transaction, each in the trace it arrived in at the CS (a move's trace
    goes on here, and on to the reply this sends). Under load a pull brings many 転入通知; one by one each cost some
    seven round trips, so those that may close together do (docs/architecture.md, "The register's notice loop")."""
    closing = closable_together(notices)
    closed = {}
    if closing:
        with tracer().start_as_current_span(f"rrs close {len(closing)} records", kind=trace.SpanKind.CONSUMER,
                                            links=links_to(context_from_traceparent(n.traceparent) for n in closing)):
            outcomes = await close_after_moves_in(session, [n.message for n in closing], municipality_code=municipality_code)
        closed = {n.sequence: outcome for n, outcome in zip(closing, outcomes)}
    for notice in notices:
        with tracer().start_as_current_span(f"rrs take {notice.message.kind}", context=context_from_traceparent(notice.traceparent),
                                            kind=trace.SpanKind.CONSUMER, attributes={"jukinet.notice.sequence": notice.sequence}):
            await apply_notice(session, notice, municipality_code=municipality_code, known_municipality=known_municipality, today=today,
                               closed=closed.get(notice.sequence))


async def apply_notice(session: AsyncSession, notice: CsNotice, *, municipality_code: str, known_municipality, today: date,
                       closed: tuple[MoveInReply, str] | None = None) -> None:
    """Keep one notice and do what it means here; the notice row is also the pull cursor.
    ``closed``: what :func:`close_after_moves_in` made of this 転入通知 already, together with others of its pull."""
    from services.municipal_rrs import online  # online filings build on the moves below

    message = notice.message
    summary = ""
    if isinstance(message, OnlineFilingNotice):
        summary = await online.take_filing(session, message, municipality_code=municipality_code, known_municipality=known_municipality, today=today)
    elif isinstance(message, OnlineConfirmationNotice):
        summary = await online.take_confirmation(session, message, municipality_code=municipality_code, known_municipality=known_municipality, today=today)
    elif isinstance(message, SupportMeasureNotice | SupportMeasureAck | CertificateAttemptNotice):
        summary = await dv.take_notice(session, message, municipality_code=municipality_code, known_municipality=known_municipality)
    elif isinstance(message, MoveOutCertificate):
        await keep_certificate(session, message)
        summary = f"転入予約: {message.resident_code} from {message.municipality_code}, planned {message.planned_date.isoformat()}"
        if message.person.support_measures:
            summary += "; " + await dv.take_from_certificate(session, message, municipality_code=municipality_code, known_municipality=known_municipality)
    elif isinstance(message, MoveOutWithdrawal):
        reservation = await session.get(MoveReservationRow, message.certificate_id, with_for_update=True)
        if reservation is not None and reservation.status == "pending":
            reservation.status = "withdrawn"
        summary = f"転出取消 at {message.municipality_code}: the 転入予約 of {message.resident_code} is withdrawn"
    elif isinstance(message, MoveInNotice):
        reply, summary = closed or (await close_after_moves_in(session, [message], municipality_code=municipality_code))[0]
        _to_cs(session, municipality_code, reply)
    elif isinstance(message, MoveInReply):
        if message.discrepancies:
            items = ", ".join(f"{d.item}: {d.origin_value} ≠ {d.destination_value}" for d in message.discrepancies)
            summary = f"転入通知 answered by {message.municipality_code} with discrepancies — {items}"
        else:
            summary = f"転入通知 answered by {message.municipality_code}: record closed, no discrepancy"
    session.add(IncomingNoticeRow(
        cs_sequence=notice.sequence, kind=message.kind, resident_code=message.resident_code, summary=summary,
        payload=message.model_dump_json(),
    ))


async def close_after_moves_in(session: AsyncSession, notices: list[MoveInNotice], *, municipality_code: str) -> list[tuple[MoveInReply, str]]:
    """転入通知 received, one per person: each record closes (転出確定), in the same few statements for all of them.
    The reply each destination gets, and what staff read, in the notices' order."""
    rows = await resident_rows_for_update(session, [n.resident_code for n in notices])
    savings, outcomes = [], []
    for notice in notices:
        closed, discrepancies = False, []
        row = rows.get(notice.resident_code)
        if row is None:
            summary = f"転入通知 from {notice.municipality_code} for {notice.resident_code}, who is not on this register"
        else:
            resident = from_row(row)
            try:
                event, discrepancies = resident.close_after_move_in(notice.change)
            except RegistryRuleViolation as exc:
                summary = f"転入通知 not applied, for staff: {exc}"
            else:
                closed = True
                savings.append(Saving(resident, event, staff=f"cs-notice:{notice.municipality_code}"))
                summary = f"転出確定: {notice.resident_code} moved in at {notice.municipality_code}" + (f" ({len(discrepancies)} discrepancies reported)" if discrepancies else "")
        reply = MoveInReply(municipality_code=municipality_code, destination_municipality_code=notice.municipality_code, resident_code=notice.resident_code,
                            closed=closed, discrepancies=discrepancies, replied_at=datetime.now(UTC))
        outcomes.append((reply, summary))
    await save_many(session, savings)
    return outcomes


async def record_review(session: AsyncSession, review_model, *, filing: MoveInFiling, reason: str, staff: str) -> uuid.UUID:
    review_id = uuid.uuid4()
    session.add(review_model(
        id=review_id, resident_codes=json.dumps([p.resident_code for p in filing.persons]), reason=reason,
        filing=filing.model_dump_json(), filed_by=staff, state="open",
    ))
    return review_id

