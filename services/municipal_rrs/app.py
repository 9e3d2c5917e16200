"""HTTP API of the resident register (for counter staff and back office), and
the relay that carries identity changes to the municipality's own CS."""


import json
import uuid
from datetime import date, datetime, timedelta, UTC
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.register import (
    ChangeHousehold, ChangeName, CorrectRecord, HistoryEntry, HouseholdMember, MoveWithin, PortalCredential,
    RecordDeath, RegisterResident, RemoveExOfficio, ResidentList, ResidentRecord, RestoreExOfficio,
)
from services.common.outbox import OutboxRelay
from services.common.problems import ProblemError, install_problem_handlers
from services.common.runtime import Runtime
from services.common.settings import ServiceSettings
from services.municipal_rrs import service
from services.municipal_rrs.domain import RegistryRuleViolation
from services.municipal_rrs.models import Outbox, Refusal

PORTAL_CREDENTIAL_SECONDS = 24 * 3600


def build_app(settings: ServiceSettings) -> FastAPI:
    rt = Runtime(settings, with_producer=False)
    municipality = settings.topology_model.municipality(settings.tenant)
    if municipality is None:
        raise SystemExit(f"municipality {settings.tenant} is not in the topology")
    cs_node = f"cs_gateway.{municipality.code}"
    cs_party = f"cs-{municipality.code}"

    async def deliver_to_cs(rows: list[Outbox]) -> None:
        """One pass of the outbox in one request, in order; each message keeps its change's trace."""
        body = '{"messages":[' + ",".join(
            '{"traceparent":%s,"message":%s}' % (json.dumps(row.traceparent), row.payload) for row in rows
        ) + "]}"
        response = await rt.http.post(
            f"{settings.peer(cs_node)}/v1/rrs/batches",
            content=body.encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {rt.token_for(cs_party)}"},
        )
        if response.status_code not in (200, 201, 202):
            raise RuntimeError(f"CS answered {response.status_code}: {response.text[:500]}")

    relay = OutboxRelay(rt.sessions, Outbox, deliver_batch=deliver_to_cs, poll_seconds=settings.outbox_poll_seconds)
    app = FastAPI(
        title=f"住民記録システム {municipality.name} ({municipality.code})",
        version="1.0.0",
        description="The resident register of one municipality: every 住民票 item with its history. Only its own CS receives anything from it.",
        lifespan=rt.background(relay.run_forever),
    )
    install_problem_handlers(app, rt.refusal_recorder(Refusal))
    app.state.relay = relay

    async def session_dep():
        async with rt.sessions() as session, session.begin():
            yield session

    SessionDep = Annotated[AsyncSession, Depends(session_dep)]

    def staff_dep(request: Request, x_staff_id: Annotated[str | None, Header(max_length=100, pattern=r"^[A-Za-z0-9._-]+$")] = None) -> str:
        request.state.caller = x_staff_id or "counter"
        return request.state.caller

    StaffDep = Annotated[str, Depends(staff_dep)]
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
        relay.wakeup.set()
        return record

    @router.post("/residents", status_code=201, response_model=ResidentRecord)
    async def register_resident(body: RegisterResident, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """Record a person: a birth (出生届) or an ex-officio record (職権記載)."""
        try:
            record = await service.register_resident(session, body, municipality_code=municipality.code, staff=staff, today=date.today())
        except RegistryRuleViolation as exc:
            raise rule(exc) from None
        relay.wakeup.set()
        return record

    @router.get("/residents", response_model=ResidentList)
    async def search_residents(
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
        return ResidentList(residents=found, truncated=truncated)

    @router.get("/residents/{resident_code}", response_model=ResidentRecord)
    async def get_resident(resident_code: str, session: SessionDep) -> ResidentRecord:
        """One 住民票, every item."""
        try:
            return await service.get_record(session, resident_code)
        except service.NotFound:
            raise not_found(resident_code) from None

    @router.get("/residents/{resident_code}/history", response_model=list[HistoryEntry])
    async def get_history(resident_code: str, session: SessionDep) -> list[HistoryEntry]:
        """Every change of the record, oldest first."""
        try:
            return await service.history(session, resident_code)
        except service.NotFound:
            raise not_found(resident_code) from None

    @router.post("/residents/{resident_code}/death", response_model=ResidentRecord)
    async def record_death(resident_code: str, body: RecordDeath, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """死亡届: closes the record."""
        return await run_change(session, resident_code, lambda r: r.record_death(body, today=date.today()), staff)

    @router.post("/residents/{resident_code}/move-within", response_model=ResidentRecord)
    async def move_within(resident_code: str, body: MoveWithin, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """転居届: a new address in this municipality."""
        return await run_change(session, resident_code, lambda r: r.move_within(body), staff)

    @router.post("/residents/{resident_code}/name-change", response_model=ResidentRecord)
    async def change_name(resident_code: str, body: ChangeName, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """氏名の変更 (e.g. after marriage), with 旧氏 where recorded."""
        return await run_change(session, resident_code, lambda r: r.change_name(body), staff)

    @router.post("/residents/{resident_code}/corrections", response_model=ResidentRecord)
    async def correct(resident_code: str, body: CorrectRecord, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """職権修正 or 修正: correct identity items, with an explanation."""
        return await run_change(session, resident_code, lambda r: r.correct(body), staff)

    @router.post("/residents/{resident_code}/removal", response_model=ResidentRecord)
    async def remove(resident_code: str, body: RemoveExOfficio, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """職権消除: close the record ex officio."""
        return await run_change(session, resident_code, lambda r: r.remove_ex_officio(body), staff)

    @router.post("/residents/{resident_code}/restoration", response_model=ResidentRecord)
    async def restore(resident_code: str, body: RestoreExOfficio, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """職権回復: undo an erroneous death or removal."""
        return await run_change(session, resident_code, lambda r: r.restore_ex_officio(body), staff)

    @router.post("/residents/{resident_code}/household", response_model=ResidentRecord)
    async def change_household(resident_code: str, body: ChangeHousehold, session: SessionDep, staff: StaffDep) -> ResidentRecord:
        """世帯変更: join another household or head a new one (not sent to the network)."""
        try:
            return await service.change_household(session, resident_code, body, staff=staff)
        except service.NotFound:
            raise not_found(resident_code) from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None

    @router.get("/households/{household_id}", response_model=list[HouseholdMember])
    async def household(household_id: uuid.UUID, session: SessionDep) -> list[HouseholdMember]:
        """Members of a household, head first."""
        try:
            return await service.household_members(session, household_id)
        except service.NotFound:
            raise ProblemError(404, "not-found", "No such household") from None

    @router.post("/residents/{resident_code}/portal-credential", response_model=PortalCredential)
    async def portal_credential(resident_code: str, session: SessionDep, staff: StaffDep) -> PortalCredential:
        """Issue the resident a signed credential for the provision-log portal (handed over at the counter)."""
        try:
            resident = await service.load(session, resident_code)
        except service.NotFound:
            raise not_found(resident_code) from None
        token = rt.token_for("provision-log", subject=resident.resident_code, lifetime_seconds=PORTAL_CREDENTIAL_SECONDS, claims={"scope": "resident"})
        return PortalCredential(resident_code=resident.resident_code, token=token, expires_at=datetime.now(UTC) + timedelta(seconds=PORTAL_CREDENTIAL_SECONDS), issuer=rt.party)

    app.include_router(router)
    return app
