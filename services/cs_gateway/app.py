"""HTTP edge of the CS: the RRS inbox (strict allow-list), resync answers, and
the relay that forwards applied changes upward on Kafka."""


import asyncio

from fastapi import Depends, FastAPI, Query
from sqlalchemy import func, select

from contracts import topics
from contracts.base import BIGINT_MAX
from contracts.household import HouseholdAnswer, HouseholdComposition, HouseholdRequest
from contracts.identifiers import ResidentCode
from contracts.identity import IdentityChange, IdentityChangeAck, IdentityChangeBatch
from contracts.moves import CsNoticeBatch, MoveOutCertificate
from contracts.online import OnlineFilingOutcome
from contracts.rrs_inbox import RrsBatch, RrsBatchAck
from services.common.auth import bearer_verifier
from services.common.kafka import Refuse, StoredOffsetConsumer
from services.common.moves import arriving_in, forwarded_by_cs
from services.common.outbox import poll_forever
from opentelemetry import trace

from services.common.problems import ProblemError, install_problem_handlers
from services.common.telemetry import context_from_traceparent, tracer
from services.common.provision import ProvisionRefused
from services.common.households import household_grant
from services.cs_gateway import households
from services.common.runtime import Runtime
from services.common.settings import ServiceSettings
from services.common.tier import Tier
from services.common.versioning import Decision
from services.cs_gateway.models import TABLES, ConsumerOffset, DeadLetter, MessageReceipt, Outbox, Refusal
from services.cs_gateway.moves import CsMoves
from services.cs_gateway.online import CsOnline
from services.cs_gateway.dv import CsDv
from contracts.dv import SupportMeasureAck, SupportMeasureNotice
from services.cs_gateway.jpki_routes import jpki_router
from services.cs_gateway.models import RECOVERY
from services.cs_gateway.snapshots import cs_recovery


def build_app(settings: ServiceSettings) -> FastAPI:
    rt = Runtime(settings)
    topology = settings.topology_model
    municipality = topology.municipality(settings.tenant)
    if municipality is None:
        raise SystemExit(f"municipality {settings.tenant} is not in the topology")
    upward_topic = topics.prefecture_identity(municipality.prefecture) if topology.network.prefecture_tier else topics.NATIONAL_IDENTITY

    def upstream_of(code: str) -> str | None:
        return topology.upstream_of_cs(code) if topology.municipality(code) is not None else None

    def forward_to(change: IdentityChange) -> str | None:
        return upward_topic if forwarded_by_cs(change, municipality_code=municipality.code, upstream_of=upstream_of) else None

    tier = Tier(
        rt, TABLES, Outbox, forward_to=forward_to, source_of=None,
        on_applied=lambda session, changes: moves.on_applied(session, changes), arriving=arriving_in({municipality.code}),  # moves is made with the tier
    )
    moves = CsMoves(tier=tier, municipality_code=municipality.code, topology=topology)
    inbox = StoredOffsetConsumer(
        bootstrap=settings.kafka_bootstrap, topic=topics.cs_inbox(municipality.code), sessions=rt.sessions, offset_model=ConsumerOffset,
        dead_letter_model=DeadLetter, gate=rt.record_gate(), receipt_model=MessageReceipt, handler=moves.inbox_handler(), producer=rt.producer, name=rt.party,
    )

    relay = rt.kafka_outbox_relay(Outbox)
    online = CsOnline(rt, municipality=municipality, moves=moves)
    dv = CsDv(rt, municipality_code=municipality.code, topology=topology, upward_topic=upward_topic, moves=moves, online=online)  # DV等支援措置

    async def record_assurance_forever() -> None:
        await poll_forever(online.record_assurance_once, wakeup=asyncio.Event(), idle_seconds=1.0, what="assurance events to the national server")

    recovery_routers, recovery_loops = cs_recovery(rt, tier, RECOVERY, municipality_code=municipality.code, topology=topology)  # snapshots, reconciliation
    app = FastAPI(
        title=f"CS {municipality.name} ({municipality.code})",
        version="1.0.0",
        description="Communication server: the only door between the municipal register and the network. Fixed formats only.",
        lifespan=rt.background(relay.run_forever, inbox.run_forever, record_assurance_forever, *recovery_loops),
    )
    install_problem_handlers(app, rt.refusal_recorder(Refusal))
    from_own_rrs = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party == f"rrs-{municipality.code}")

    @app.post("/v1/rrs/identity-changes", status_code=202, response_model=IdentityChangeAck, dependencies=[Depends(from_own_rrs)])
    async def receive_identity_change(change: IdentityChange) -> IdentityChangeAck:
        """Take one 本人確認情報 change from this municipality's RRS and forward it upward."""
        if change.municipality_code != municipality.code:
            raise ProblemError(422, "wrong-municipality", "The change is not for this municipality", f"this CS serves {municipality.code}, the change names {change.municipality_code}")
        try:
            async with rt.sessions() as session, session.begin():
                outcome = await tier.receive(session, change)
        except Refuse as exc:
            raise ProblemError(409, "identity-conflict", "The change conflicts with what the CS holds", str(exc)) from None
        return IdentityChangeAck(event_id=change.event_id, resident_code=change.resident_code, version=change.version, outcome="duplicate" if outcome.decision is Decision.duplicate else "accepted")

    rrs_batches = asyncio.Lock()

    @app.post("/v1/rrs/batches", status_code=202, response_model=RrsBatchAck, dependencies=[Depends(from_own_rrs)])
    async def receive_batch(batch: RrsBatch) -> RrsBatchAck:
        """Take the messages of one RRS outbox pass, in order, in one transaction (all or nothing)."""
        accepted = duplicates = 0
        try:
            # one batch at a time: a batch resent after a timeout waits for the first copy and is then a duplicate
            async with rrs_batches, rt.sessions() as session, session.begin():
                for envelope in batch.messages:
                    message = envelope.message
                    with tracer().start_as_current_span(f"cs take {message.kind}", context=context_from_traceparent(envelope.traceparent), kind=trace.SpanKind.CONSUMER):
                        if message.municipality_code != municipality.code:
                            raise ProblemError(422, "wrong-municipality", "A message is not for this municipality", f"this CS serves {municipality.code}, a message names {message.municipality_code}")
                        if isinstance(message, IdentityChange):
                            await moves.before_own_change(session, message)
                            fresh = (await tier.receive(session, message)).decision is not Decision.duplicate
                        elif isinstance(message, HouseholdComposition):
                            fresh = await households.store_composition(session, message)
                        elif isinstance(message, OnlineFilingOutcome):
                            fresh = await online.take_outcome(session, message)
                        elif isinstance(message, SupportMeasureNotice | SupportMeasureAck):
                            fresh = await dv.take_from_rrs(session, message)
                        else:
                            await moves.forward_from_rrs(session, message)
                            fresh = True
                    accepted += fresh
                    duplicates += not fresh
        except Refuse as exc:
            raise ProblemError(409, "identity-conflict", "A change conflicts with what the CS holds", str(exc)) from None
        return RrsBatchAck(accepted=accepted, duplicates=duplicates)

    @app.post("/v1/rrs/household-compositions", status_code=202, dependencies=[Depends(from_own_rrs)])
    async def receive_household(composition: HouseholdComposition) -> dict:
        """Take the current composition of one household from this municipality's RRS (kept here, never forwarded)."""
        if composition.municipality_code != municipality.code:
            raise ProblemError(422, "wrong-municipality", "The household is not of this municipality")
        async with rt.sessions() as session, session.begin():
            stored = await households.store_composition(session, composition)
        return {"household_id": str(composition.household_id), "outcome": "accepted" if stored else "stale"}

    @app.get("/v1/rrs/notices", response_model=CsNoticeBatch, dependencies=[Depends(from_own_rrs)])
    async def notices(after: int = Query(0, ge=0, le=BIGINT_MAX), limit: int = Query(100, ge=1, le=500), wait: float = Query(0, ge=0, le=60)) -> CsNoticeBatch:
        """What other municipalities sent (certificates, withdrawals, 転入通知, replies), in arrival order.

        With ``wait`` (seconds) and nothing to hand over, the answer waits until a notice arrives or the time is up.
        """
        return CsNoticeBatch(notices=await moves.wait_for_notices(rt.sessions, after, limit, wait_seconds=wait))

    @app.post("/v1/rrs/returning/{resident_code}", response_model=MoveOutCertificate, dependencies=[Depends(from_own_rrs)])
    async def returning(resident_code: ResidentCode) -> MoveOutCertificate:
        """国外からの転入 of a person registered before: the national record of their 国外転出 is the basis."""
        response = await rt.http.get(
            f"{settings.peer('national_server.national')}/internal/v1/identity/{resident_code}/changes",
            params={"after": 0}, headers={"authorization": f"Bearer {rt.token_for('national')}"},
        )
        response.raise_for_status()
        changes = IdentityChangeBatch.model_validate_json(response.content).changes
        if not changes:
            raise ProblemError(404, "not-found", "The network knows no such person")
        try:
            async with rt.sessions() as session, session.begin():
                return await moves.returning_from_abroad(session, changes[-1])
        except LookupError as exc:
            raise ProblemError(409, "not-abroad", "The person did not leave abroad", str(exc)) from None

    from_national = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party == "national")

    @app.post("/internal/v1/household-queries", response_model=HouseholdAnswer, dependencies=[Depends(from_national)], tags=["provision"])
    async def household_query(request: HouseholdRequest) -> HouseholdAnswer:
        """The household of a person of this municipality, for an authorised household-based affair (recorded)."""
        try:
            grant = household_grant(topology, agency_id=request.agency, affair_id=request.affair)
        except ProvisionRefused as exc:
            raise ProblemError(403, exc.slug, "Not authorised for household information", exc.detail) from None
        async with rt.sessions() as session, session.begin():
            found = await households.answer(session, request=request, grant=grant, municipality_code=municipality.code, provider=rt.party)
        if found is None:
            raise ProblemError(404, "not-found", "No household known for this person")
        return found

    @app.get("/internal/v1/refusals", tags=["operations"])
    async def refusal_counts() -> dict[str, int]:
        """Refused requests by reason (what the CS kept out)."""
        async with rt.sessions() as session:
            rows = (await session.execute(select(Refusal.reason, func.count()).group_by(Refusal.reason))).all()
        return {reason: count for reason, count in rows}

    app.include_router(tier.internal_router())
    for recovery_router in recovery_routers:
        app.include_router(recovery_router)
    app.include_router(online.router())
    app.include_router(dv.router())  # support measures: 広域交付 answers, the online pre-fill
    app.include_router(jpki_router(rt, municipality.code))  # JPKI and the assurance ledger, forwarded to the national server
    return app
