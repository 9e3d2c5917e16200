"""HTTP API of the resident register (for counter staff and back office), and
the relay that carries identity changes to the municipality's own CS."""


import asyncio
import functools
import json
import uuid
from datetime import date, datetime, timedelta, UTC
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from sqlalchemy import select

from contracts.identifiers import ResidentCode
from contracts.moves import (
    CsNotice, CsNoticeBatch, IncomingNotice, MoveInFiling, MoveInFromAbroad, MoveInPerson, MoveInReview, MoveOutCancellation, MoveOutCertificate,
    MoveOutFiling,
)
from contracts.online import Letter, OnlineFilingState, OnlineFilingView
from contracts.register import (
    ChangeHousehold, ChangeName, CorrectRecord, HistoryEntry, HouseholdMember, MoveWithin, PortalCredential, PortalCredentialRequest,
    RecordDeath, RegisterResident, RemoveExOfficio, ResidentList, ResidentRecord, RestoreExOfficio,
)
from services.common.idempotency import install_idempotency, token_caller
from services.common.outbox import DeliveryRefused, REFUSAL_STATUSES, RELAY_PACE_SECONDS, OutboxRelay, poll_forever
from services.common.problems import ProblemError, install_problem_handlers
from services.common.runtime import Runtime
from services.common.settings import ServiceSettings
from services.common.tokens import RESIDENT_CREDENTIAL_MAX_SECONDS, RESIDENT_CREDENTIAL_SCOPE
from services.municipal_rrs import access, moves, online, service, staff_routes, staff_store
from services.municipal_rrs.domain import RegistryRuleViolation
from services.municipal_rrs.jpki_routes import jpki_router
from services.municipal_rrs.dv_routes import dv_housekeeping, dv_router
from services.municipal_rrs.reconcile import RegisterReconciler
from services.municipal_rrs.related_routes import related_router
from services.municipal_rrs.ui.routes import install_staff_screen_handler, staff_router
from services.municipal_rrs.models import IdempotencyKey, IncomingNoticeRow, LetterRow, OnlineFilingRow, MoveInReviewRow, MoveReservationRow, Outbox, Refusal
from services.municipal_rrs.request_deps import StaffDep, transaction_dependency

PORTAL_CREDENTIAL_SECONDS = RESIDENT_CREDENTIAL_MAX_SECONDS  # a kind of its own (services/common/tokens.py, docs/security-tokens.md)


def build_app(settings: ServiceSettings) -> FastAPI:
    rt = Runtime(settings, with_producer=False)
    municipality = settings.topology_model.municipality(settings.tenant)
    if municipality is None:
        raise SystemExit(f"municipality {settings.tenant} is not in the topology")
    cs_node = f"cs_gateway.{municipality.code}"
    cs_party = f"cs-{municipality.code}"
    topology = settings.topology_model

    async def deliver_to_cs(rows: list) -> None:
        """One pass of the outbox in one request, in order; each message keeps its change's trace."""
        body = '{"messages":[' + ",".join(
            '{"traceparent":%s,"message":%s}' % (json.dumps(row.traceparent), row.payload) for row in rows
        ) + "]}"
        response = await rt.http.post(
            f"{settings.peer(cs_node)}/v1/rrs/batches",
            content=body.encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {rt.token_for(cs_party)}"},
            timeout=60.0,  # a busy CS takes long; a resend before it finished would only queue behind the first copy
        )
        if response.status_code in REFUSAL_STATUSES:  # the CS will never take this batch as it is: the relay finds the row and sets it aside
            raise DeliveryRefused(response.status_code, response.text[:1500])
        if response.status_code not in (200, 201, 202):
            raise RuntimeError(f"CS answered {response.status_code}: {response.text[:500]}")

    relay = OutboxRelay(rt.sessions, Outbox, deliver_batch=deliver_to_cs, poll_seconds=settings.outbox_poll_seconds)
    reconciler = RegisterReconciler(rt, municipality_code=municipality.code, relay=relay)

    def known_municipality(code: str) -> bool:
        return topology.municipality(code) is not None

    kept_through: list[int | None] = [None]  # the last notice kept here, once read; None: read it from the database

    async def pull_notices_once() -> int:
        """Fetch what other municipalities sent since the last notice kept here; apply each once, in order."""
        if kept_through[0] is None:
            async with rt.sessions() as session:
                kept_through[0] = await moves.last_notice_sequence(session)
        after = kept_through[0]
        wait = settings.notices_wait_seconds  # a long poll: the CS answers as soon as a notice arrives
        response = await rt.http.get(
            f"{settings.peer(cs_node)}/v1/rrs/notices", params={"after": after, "limit": 100, "wait": wait},
            headers={"authorization": f"Bearer {rt.token_for(cs_party)}"}, timeout=wait + 10.0,
        )
        response.raise_for_status()
        batch = CsNoticeBatch.model_validate_json(response.content)
        try:
            await apply_notices(batch.notices)
        except BaseException:
            kept_through[0] = None  # some may be kept: the database says how far
            raise
        if batch.notices:
            kept_through[0] = batch.notices[-1].sequence  # this loop alone keeps notices
        return len(batch.notices)

    async def apply_notices(notices: list[CsNotice]) -> None:
        """All the notices of one pull in one transaction; if one fails, one transaction each, so
        those before it are kept and it is taken again at the next pull (it raises here)."""
        take = functools.partial(moves.take_notices, municipality_code=municipality.code, known_municipality=known_municipality, today=date.today())
        try:
            async with rt.sessions() as session, session.begin():
                await take(session, notices)
            return
        except Exception:
            if len(notices) == 1:
                raise
        for notice in notices:
            async with rt.sessions() as session, session.begin():
                await take(session, [notice])

    async def pull_notices_forever() -> None:
        # paced as relay passes are: an idle register's long poll answers a notice at once, a busy one takes several per pull
        await poll_forever(pull_notices_once, wakeup=asyncio.Event(), idle_seconds=settings.outbox_poll_seconds, what="pulling notices from the CS",
                           pace_seconds=RELAY_PACE_SECONDS)

    app = FastAPI(
        title=f"住民記録システム {municipality.name} ({municipality.code})",
        version="1.0.0",
        description="The resident register of one municipality: every 住民票 item with its history. Only its own CS receives anything from it.",
        lifespan=rt.background(relay.run_forever, pull_notices_forever, reconciler.run_forever,
                               dv_housekeeping(rt, municipality_code=municipality.code, relay=relay, known_municipality=known_municipality)),
        dependencies=[Depends(access.authorize)],  # every route: its rule in access.ACCESS, the staff member's credential and role
    )
    record_refusal = rt.refusal_recorder(Refusal)
    install_problem_handlers(app, record_refusal)
    # Idempotency-Key on every POST, scoped to the member of staff whose bearer token (POST /v1/staff/token) made it
    install_idempotency(app, rt, IdempotencyKey, caller=token_caller(rt.keys, audience=rt.party),
                        not_kept=[r"/v1/residents/[^/]+/portal-credential", r"/v1/staff/.*"])  # answers that are credentials
    app.state.relay = relay
    app.state.runtime = rt  # for access.authorize and the staff routes, before the lifespan sets it too
    app.state.record_refusal = record_refusal

    SessionDep = transaction_dependency(rt.sessions)  # a commit that wrote outbox rows wakes the relay (outbox.enqueue)
    router = APIRouter(prefix="/v1")

    def rule(exc: RegistryRuleViolation) -> ProblemError:
        return ProblemError(409, "registry-rule", "The change breaks a registry rule", str(exc))

    def not_found(code: str) -> ProblemError:
        return ProblemError(404, "not-found", "No such record", f"no resident {code} in this municipality")

    async def run_change(session, code, act, staff):
        try:
            record = await service.change(session, code, act, staff=staff)
        except service.NotFound:
            raise not_found(code) from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None
        return record

    @router.post("/residents", status_code=201, response_model=ResidentRecord)
    async def register_resident(body: RegisterResident, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """Record a person: a birth (出生届) or an ex-officio record (職権記載)."""
        try:
            record = await service.register_resident(session, body, municipality_code=municipality.code, staff=staff, today=date.today())
        except RegistryRuleViolation as exc:
            raise rule(exc) from None
        return record

    @router.get("/residents", response_model=ResidentList)
    async def search_residents(
        request: Request,
        session: SessionDep,
        name: Annotated[str | None, Query(max_length=60)] = None,
        kana: Annotated[str | None, Query(max_length=120)] = None,
        birth_date: date | None = None,
        address: Annotated[str | None, Query(max_length=200)] = None,
        include_closed: bool = False,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> ResidentList:
        """Search by name (prefix), furigana (prefix), birth date and address (part)."""
        if not any((name, kana, birth_date, address)):
            raise ProblemError(400, "search-needs-criteria", "Give at least one search criterion")
        found, truncated = await service.search(session, name=name, kana=kana, birth_date=birth_date, address=address, include_closed=include_closed, limit=limit)
        await access.record_reads(request, [r.resident_code for r in found])  # each record listed was read
        return ResidentList(residents=found, truncated=truncated)

    @router.get("/residents/{resident_code}", response_model=ResidentRecord)
    async def get_resident(resident_code: ResidentCode, session: SessionDep) -> ResidentRecord:
        """One 住民票, every item."""
        try:
            return await service.get_record(session, resident_code)
        except service.NotFound:
            raise not_found(resident_code) from None

    @router.get("/residents/{resident_code}/history", response_model=list[HistoryEntry])
    async def get_history(resident_code: ResidentCode, session: SessionDep) -> list[HistoryEntry]:
        """Every change of the record, oldest first."""
        try:
            return await service.history(session, resident_code)
        except service.NotFound:
            raise not_found(resident_code) from None

    @router.post("/residents/{resident_code}/death", response_model=ResidentRecord)
    async def record_death(resident_code: ResidentCode, body: RecordDeath, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """死亡届: closes the record."""
        return await run_change(session, resident_code, lambda r: r.record_death(body, today=date.today()), staff)

    @router.post("/residents/{resident_code}/move-within", response_model=ResidentRecord)
    async def move_within(resident_code: ResidentCode, body: MoveWithin, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """転居届: a new address in this municipality."""
        return await run_change(session, resident_code, lambda r: r.move_within(body), staff)

    @router.post("/residents/{resident_code}/name-change", response_model=ResidentRecord)
    async def change_name(resident_code: ResidentCode, body: ChangeName, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """氏名の変更 (e.g. after marriage), with 旧氏 where recorded."""
        return await run_change(session, resident_code, lambda r: r.change_name(body), staff)

    @router.post("/residents/{resident_code}/corrections", response_model=ResidentRecord)
    async def correct(resident_code: ResidentCode, body: CorrectRecord, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """職権修正 or 修正: correct identity items, with an explanation."""
        return await run_change(session, resident_code, lambda r: r.correct(body), staff)

    @router.post("/residents/{resident_code}/removal", response_model=ResidentRecord)
    async def remove(resident_code: ResidentCode, body: RemoveExOfficio, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """職権消除: close the record ex officio."""
        return await run_change(session, resident_code, lambda r: r.remove_ex_officio(body), staff)

    @router.post("/residents/{resident_code}/restoration", response_model=ResidentRecord)
    async def restore(resident_code: ResidentCode, body: RestoreExOfficio, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """職権回復: undo an erroneous death or removal."""
        return await run_change(session, resident_code, lambda r: r.restore_ex_officio(body), staff)

    @router.post("/residents/{resident_code}/household", response_model=ResidentRecord)
    async def change_household(resident_code: ResidentCode, body: ChangeHousehold, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """世帯変更: join another household or head a new one (not sent to the network)."""
        try:
            return await service.change_household(session, resident_code, body, staff=staff)
        except service.NotFound:
            raise not_found(resident_code) from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None

    @router.post("/move-outs", status_code=201, response_model=list[ResidentRecord])
    async def move_out(body: MoveOutFiling, session: SessionDep, staff: StaffDep) -> list[ResidentRecord]:
        """転出届 for one person or several members of a household: in transit until the destination's 転入."""
        try:
            records = await moves.file_move_out(
                session, body, municipality_code=municipality.code, known_municipality=known_municipality,
                staff=staff, today=date.today(),
            )
        except service.NotFound as exc:
            raise not_found(str(exc)) from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None
        return records

    @router.post("/residents/{resident_code}/move-out/cancellation", response_model=ResidentRecord)
    async def cancel_move_out(resident_code: ResidentCode, body: MoveOutCancellation, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """転出取消: the person stays; the destination's 転入予約 is withdrawn."""
        try:
            record = await moves.cancel_move_out(session, resident_code, body, municipality_code=municipality.code, staff=staff)
        except service.NotFound:
            raise not_found(resident_code) from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None
        return record

    @router.post("/move-ins", status_code=201, response_model=list[ResidentRecord])
    async def move_in(body: MoveInFiling, staff: StaffDep) -> list[ResidentRecord]:
        """転入届 (特例転入) from the 転出証明書情報 received through the CS; a person without one is flagged for staff."""
        try:
            async with rt.sessions() as session, session.begin():
                records = await moves.file_move_in(session, body, municipality_code=municipality.code, staff=staff, today=date.today())
        except moves.NoMatchingMoveOut as exc:
            async with rt.sessions() as session, session.begin():
                review_id = await moves.record_review(session, MoveInReviewRow, filing=body, reason=str(exc), staff=staff)
            raise ProblemError(
                409, "no-matching-move-out", "No matching move-out: flagged for staff review",
                f"{exc}; the filing is kept as review {review_id}", review_id=str(review_id), resident_codes=exc.resident_codes,
            ) from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None
        relay.wakeup.set()
        return records

    @router.post("/move-ins/from-abroad", status_code=201, response_model=ResidentRecord)
    async def move_in_from_abroad(body: MoveInFromAbroad, staff: StaffDep) -> ResidentRecord:
        """国外からの転入 of a person registered before: their 住民票コード and 個人番号 continue."""
        response = await rt.http.post(
            f"{settings.peer(cs_node)}/v1/rrs/returning/{body.resident_code}", headers={"authorization": f"Bearer {rt.token_for(cs_party)}"},
        )
        if response.status_code in (404, 409):
            raise ProblemError(409, "not-returning", "The network does not show this person as having left abroad", response.json().get("detail"))
        response.raise_for_status()
        certificate = MoveOutCertificate.model_validate_json(response.content)
        filing = MoveInFiling(
            persons=[MoveInPerson(resident_code=body.resident_code, relationship=body.relationship)], new_address=body.new_address,
            move_date=body.move_date, notified_date=body.notified_date, household_id=body.household_id,
        )
        try:
            async with rt.sessions() as session, session.begin():
                await moves.keep_certificate(session, certificate)
                [record] = await moves.file_move_in(session, filing, municipality_code=municipality.code, staff=staff, today=date.today())
        except RegistryRuleViolation as exc:
            raise rule(exc) from None
        relay.wakeup.set()
        return record

    @router.get("/move-reservations", response_model=list[MoveOutCertificate])
    async def move_reservations(session: SessionDep, include_closed: bool = False) -> list[MoveOutCertificate]:
        """転入予約: 転出証明書情報 received for persons moving here, not yet used."""
        stmt = select(MoveReservationRow).order_by(MoveReservationRow.received_at)
        if not include_closed:
            stmt = stmt.where(MoveReservationRow.status == "pending")
        return [MoveOutCertificate.model_validate_json(r.payload) for r in (await session.execute(stmt)).scalars()]

    @router.get("/notices", response_model=list[IncomingNotice])
    async def incoming_notices(session: SessionDep, unacknowledged: bool = False) -> list[IncomingNotice]:
        """Notices from other municipalities (転入予約, 転入通知, replies, withdrawals), newest first."""
        stmt = select(IncomingNoticeRow).order_by(IncomingNoticeRow.cs_sequence.desc()).limit(500)
        if unacknowledged:
            stmt = stmt.where(IncomingNoticeRow.acknowledged_at.is_(None))
        return [IncomingNotice(
            sequence=r.cs_sequence, kind=r.kind, resident_code=r.resident_code, summary=r.summary, received_at=r.received_at,
            acknowledged_by=r.acknowledged_by, acknowledged_at=r.acknowledged_at,
        ) for r in (await session.execute(stmt)).scalars()]

    @router.get("/move-in-reviews", response_model=list[MoveInReview])
    async def move_in_reviews(session: SessionDep) -> list[MoveInReview]:
        """転入届 without matching 転出証明書情報, waiting for staff."""
        rows = (await session.execute(select(MoveInReviewRow).order_by(MoveInReviewRow.filed_at.desc()).limit(500))).scalars()
        return [MoveInReview(review_id=r.id, resident_codes=json.loads(r.resident_codes), reason=r.reason, filed_by=r.filed_by, filed_at=r.filed_at, state=r.state) for r in rows]

    @router.get("/online-filings", response_model=list[OnlineFilingView])
    async def online_filings(session: SessionDep, state: OnlineFilingState | None = None) -> list[OnlineFilingView]:
        """Online filings handed over by the CS, newest first (staff confirm residence for landlord or counter checks)."""
        stmt = select(OnlineFilingRow).order_by(OnlineFilingRow.received_at.desc()).limit(500)
        if state is not None:
            stmt = stmt.where(OnlineFilingRow.state == state.value)
        return [OnlineFilingView(
            filing_id=r.filing_id, kind=r.kind, filer=r.filer, state=OnlineFilingState(r.state), reason=r.reason, received_at=r.received_at,
            completed_at=r.completed_at, confirmed_by=r.confirmed_by,
        ) for r in (await session.execute(stmt)).scalars()]

    @router.post("/online-filings/{filing_id}/residence-confirmed", response_model=OnlineFilingView)
    async def residence_confirmed(filing_id: uuid.UUID, session: SessionDep, staff: StaffDep) -> OnlineFilingView:
        """Staff record that actual residence was confirmed (landlord's confirmation or a counter visit); the move is carried out."""
        row = await session.get(OnlineFilingRow, filing_id, with_for_update=True)
        if row is None:
            raise ProblemError(404, "not-found", "No such online filing")
        if row.state != OnlineFilingState.awaiting_confirmation.value:
            raise ProblemError(409, "not-awaiting-confirmation", "The filing is not waiting for a residence confirmation", f"it is {row.state}")
        await online.complete(session, row, municipality_code=municipality.code, confirmed_by=staff, today=date.today())
        return OnlineFilingView(filing_id=row.filing_id, kind=row.kind, filer=row.filer, state=OnlineFilingState(row.state), reason=row.reason,
                                received_at=row.received_at, completed_at=row.completed_at, confirmed_by=row.confirmed_by)

    @router.get("/letters", response_model=list[Letter])
    async def letters(session: SessionDep, resident_code: ResidentCode | None = None) -> list[Letter]:
        """The mail room: letters to post (e.g. residence-confirmation codes to a new address)."""
        stmt = select(LetterRow).order_by(LetterRow.created_at.desc()).limit(500)
        if resident_code:
            stmt = stmt.where(LetterRow.resident_code == resident_code)
        return [Letter(id=r.id, resident_code=r.resident_code, address_text=r.address_text, subject=r.subject, body=r.body, created_at=r.created_at)
                for r in (await session.execute(stmt)).scalars()]

    @router.get("/households/{household_id}", response_model=list[HouseholdMember])
    async def household(household_id: uuid.UUID, session: SessionDep, request: Request) -> list[HouseholdMember]:
        """Members of a household, head first."""
        try:
            members = await service.household_members(session, household_id)
        except service.NotFound:
            raise ProblemError(404, "not-found", "No such household") from None
        await access.record_reads(request, [m.resident_code for m in members])
        return members

    @router.post("/residents/{resident_code}/portal-credential", response_model=PortalCredential)
    async def portal_credential(resident_code: ResidentCode, body: PortalCredentialRequest, session: SessionDep, staff: StaffDep) -> PortalCredential:
        """Issue the resident a signed credential for the provision-log portal, handed over at the counter after an identity
        check; who issued it, when and on which document is kept (``GET /v1/portal-credential-issues``)."""
        try:
            resident = await service.load(session, resident_code)
        except service.NotFound:
            raise not_found(resident_code) from None
        expires_at = datetime.now(UTC) + timedelta(seconds=PORTAL_CREDENTIAL_SECONDS)
        check = body.identity_check
        await staff_store.record_credential_issue(session, resident_code=resident.resident_code, issued_by=staff, expires_at=expires_at, method=check.method.value,
                                                  document_number_last4=check.document_number_last4, note=check.note)
        token = rt.token_for("provision-log", subject=resident.resident_code, lifetime_seconds=PORTAL_CREDENTIAL_SECONDS, claims={"scope": RESIDENT_CREDENTIAL_SCOPE})
        return PortalCredential(resident_code=resident.resident_code, token=token, expires_at=expires_at, issuer=rt.party)

    app.include_router(router)
    app.include_router(jpki_router(rt, municipality.code))  # JPKI at the counter, through the CS
    app.include_router(dv_router(rt, municipality_code=municipality.code, relay=relay, known_municipality=known_municipality))  # DV等支援措置, certificate requests
    app.include_router(reconciler.router())  # the register compares itself with its CS
    app.include_router(related_router(rt, municipality.code))  # 住登外者 and 印鑑登録 (R-REL-1)
    app.include_router(staff_router(rt, municipality_code=municipality.code, municipality_name=municipality.name, topology=topology,
                                    known_municipality=known_municipality, changed=relay.wakeup.set, record_refusal=record_refusal))  # counter staff screens (/staff)
    app.include_router(staff_routes.router)  # staff login and accounts, the access log
    install_staff_screen_handler(app, record_refusal)
    return app
