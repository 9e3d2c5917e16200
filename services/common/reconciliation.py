"""Reconciliation at a network tier: compare the copy with the tier below by range
digests, heal what lacks versions by resync, and record what was found.

A prefecture server compares each of its municipalities with their CS; the
national server compares each prefecture's municipalities with the
prefecture server (or each municipality with its CS when the network has no
prefecture tier). Only the people of the compared area count (municipality
code in the area), so copies of people who moved away are compared where
they live now. The CS is compared with its register by the register itself
(nothing calls into the register); the CS records those results too.

Every tier also answers the digests of its own store for the tier above.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query
from sqlalchemy import desc, select

from contracts.identity import IdentityChangeBatch
from contracts.recovery import DigestAnswer, DigestRequest, Finding, PersonsRequest, PersonState, PersonStates, RangeRequest, ReconciliationResult
from services.common import digests as sql
from services.common.auth import bearer_verifier, is_network_node
from services.common.identity_store import mark_gaps_healed
from services.common.kafka import Refuse
from services.common.reconcile import SqlSide, classify_and_heal, compare
from services.common.tokens import VerifiedToken
from services.common.topology import Node

log = logging.getLogger(__name__)

IDENTITY = sql.DigestTable("identity")


def party_of(node_id: str) -> str:
    kind, tenant = node_id.split(".", 1)
    return Node(kind=kind, tenant=tenant).party


class RemoteSide:
    """The tier below, answering digests of its store over HTTP (signed token of this node)."""

    def __init__(self, rt, node_id: str, area: list[str], *, path: str = "/internal/v1/reconciliation"):
        self.rt = rt
        self.node_id = node_id
        self.area = list(area)
        self.url = f"{rt.settings.peer(node_id)}{path}"
        self.audience = party_of(node_id)
        self.bytes = 0  # request and answer bodies exchanged so far

    async def _post(self, what: str, body) -> bytes:
        content = body.model_dump_json()
        response = await self.rt.http.post(
            f"{self.url}/{what}", content=content, timeout=120.0,
            headers={"content-type": "application/json", "authorization": f"Bearer {self.rt.token_for(self.audience)}"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"{self.node_id} answered {response.status_code} to {what}: {response.text[:300]}")
        self.bytes += len(content) + len(response.content)
        return response.content

    async def digests(self, prefixes: list[str], length: int) -> dict[str, str]:
        raw = await self._post("digests", DigestRequest(area=self.area, prefixes=prefixes, length=length))
        return DigestAnswer.model_validate_json(raw).digests

    async def rows(self, prefixes: list[str]) -> dict[str, PersonState]:
        raw = await self._post("rows", RangeRequest(area=self.area, prefixes=prefixes))
        return {p.resident_code: p for p in PersonStates.model_validate_json(raw).persons}

    async def persons(self, codes: list[str]) -> dict[str, PersonState]:
        raw = await self._post("persons", PersonsRequest(resident_codes=codes))
        return {p.resident_code: p for p in PersonStates.model_validate_json(raw).persons}


# --- what `cli status` shows: the last snapshot and reconciliation of this process -----------------------------

_last: dict[str, dict] = {"snapshot": {}, "reconciliation": {}, "healed": {}, "reported": {}}
_gauges_installed = False


def note_snapshot(municipality_code: str, when: datetime) -> None:
    _last["snapshot"][municipality_code] = when.timestamp()
    _install_gauges()


def note_reconciliation(truth_node: str, when: datetime, healed: int, reported: int) -> None:
    _last["reconciliation"][truth_node] = when.timestamp()
    _last["healed"][truth_node] = healed
    _last["reported"][truth_node] = reported
    _install_gauges()


def _install_gauges() -> None:
    """Gauges read by Prometheus and `cli status` (no-ops until the service installed its meter provider)."""
    global _gauges_installed
    if _gauges_installed:
        return
    from opentelemetry import metrics

    meter = metrics.get_meter("jukinet")

    def observe(key: str, label: str):
        def callback(_options):
            return [metrics.Observation(v, {label: k}) for k, v in dict(_last[key]).items()]

        return callback

    meter.create_observable_gauge("jukinet.last_snapshot_timestamp", callbacks=[observe("snapshot", "municipality")], description="Unix time of the last complete snapshot sent or received, per municipality")
    meter.create_observable_gauge("jukinet.last_reconciliation_timestamp", callbacks=[observe("reconciliation", "counterpart")], description="Unix time of the last finished reconciliation with a tier below")
    meter.create_observable_gauge("jukinet.last_reconciliation_healed", callbacks=[observe("healed", "counterpart")], description="Persons healed by the last reconciliation with a tier below")
    meter.create_observable_gauge("jukinet.last_reconciliation_reported", callbacks=[observe("reported", "counterpart")], description="Differences the last reconciliation reported without healing them")
    _gauges_installed = True


class Reconciler:
    """Compares this tier's store with the tiers below it, heals and records (one run at a time)."""

    def __init__(self, rt, tier, models: dict, *, counterparts: list[tuple[str, list[str]]], table: sql.DigestTable = IDENTITY):
        self.rt = rt
        self.tier = tier
        self.Reconciliation = models["Reconciliation"]
        self.Finding = models["ReconciliationFinding"]
        self.counterparts = counterparts  # (node id of the tier below, area it is compared over)
        self.table = table
        self._lock = asyncio.Lock()

    def local_side(self, area: list[str]) -> SqlSide:
        return SqlSide(self.rt.engine.connect, self.table, area)

    async def heal_from(self, source: str, copy: PersonState | None, truth: PersonState) -> tuple[str, int, str | None]:
        """Resync one person from the tier below: every change after the version held here."""
        after = copy.version if copy is not None else 0
        response = await self.rt.http.get(
            f"{self.rt.settings.peer(source)}/internal/v1/identity/{truth.resident_code}/changes",
            params={"after": after}, headers={"authorization": f"Bearer {self.rt.token_for(party_of(source))}"}, timeout=30.0,
        )
        response.raise_for_status()
        batch = IdentityChangeBatch.model_validate_json(response.content)
        applied = 0
        try:
            async with self.rt.sessions() as session, session.begin():
                for change in batch.changes:
                    applied += len((await self.tier.receive(session, change)).applied)
                await mark_gaps_healed(session, self.tier.tables, truth.resident_code, healed_by=f"reconciliation with {source}")
        except Refuse as exc:
            return "failed", 0, f"refused here: {exc}"[:2000]
        return "resynced", applied, f"{len(batch.changes)} change(s) after v{after} from {source}"

    async def reconcile_with(self, source: str, area: list[str], *, trigger: str = "schedule") -> ReconciliationResult:
        started = datetime.now(UTC)
        async with self._lock:
            try:
                remote = RemoteSide(self.rt, source, area)
                comparison = await compare(self.local_side(area), remote)
                findings, _settled = await classify_and_heal(
                    self.local_side(area), remote, area, comparison.differing, grace_seconds=self.rt.settings.reconcile_grace_seconds,
                    heal=lambda c, t: self.heal_from(source, c, t),
                )
                result = summarise(self.rt.settings.node.id, source, area, trigger, started, comparison, findings)
                result = result.model_copy(update={"bytes_exchanged": remote.bytes})
            except Exception as exc:
                log.warning("reconciliation with %s failed: %s", source, exc)
                result = ReconciliationResult(
                    copy_node=self.rt.settings.node.id, truth_node=source, area=area, trigger=trigger, started_at=started,
                    finished_at=datetime.now(UTC), outcome="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                )
            return await self.record(result)

    async def reconcile_all(self, *, trigger: str = "schedule") -> list[ReconciliationResult]:
        return [await self.reconcile_with(source, area, trigger=trigger) for source, area in self.counterparts]

    async def record(self, result: ReconciliationResult) -> ReconciliationResult:
        """Keep the run and its findings (the operator's view); a consistent run is one row."""
        async with self.rt.sessions() as session, session.begin():
            row = self.Reconciliation(
                copy_node=result.copy_node, truth_node=result.truth_node, area=",".join(result.area), trigger=result.trigger,
                started_at=result.started_at, finished_at=result.finished_at, ranges_compared=result.ranges_compared,
                ranges_descended=result.ranges_descended, persons_compared=result.persons_compared, differing=result.differing,
                healed=result.healed, reported=result.reported, requests=result.requests, bytes_exchanged=result.bytes_exchanged,
                outcome=result.outcome, error=result.error,
            )
            session.add(row)
            await session.flush()
            for f in result.findings:
                session.add(self.Finding(reconciliation_id=row.id, **f.model_dump()))
        if result.outcome != "failed" and result.finished_at is not None:
            note_reconciliation(result.truth_node, result.finished_at, result.healed, result.reported)
        return result.model_copy(update={"id": row.id})

    async def load_last(self) -> None:
        """Show the last recorded runs in the gauges after a restart."""
        async with self.rt.sessions() as session:
            rows = (await session.execute(
                select(self.Reconciliation).where(self.Reconciliation.outcome != "failed").order_by(desc(self.Reconciliation.id)).limit(200)
            )).scalars().all()
        for row in reversed(rows):
            if row.finished_at is not None:
                note_reconciliation(row.truth_node, row.finished_at, row.healed, row.reported)

    async def run_forever(self) -> None:
        """Every ``JUKINET_RECONCILE_SECONDS`` (0: never), compare with every tier below."""
        try:
            await self.load_last()
        except Exception:
            log.exception("could not read the last reconciliations")
        period = self.rt.settings.reconcile_seconds
        if period <= 0 or not self.counterparts:
            return
        while True:
            await asyncio.sleep(period)
            try:
                await self.reconcile_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciliation pass failed")

    async def history(self, limit: int, *, with_findings: bool = True) -> list[ReconciliationResult]:
        async with self.rt.sessions() as session:
            rows = (await session.execute(select(self.Reconciliation).order_by(desc(self.Reconciliation.id)).limit(limit))).scalars().all()
            found: dict[int, list] = {}
            if with_findings and rows:
                for f in (await session.execute(select(self.Finding).where(self.Finding.reconciliation_id.in_([r.id for r in rows])).order_by(self.Finding.id))).scalars():
                    found.setdefault(f.reconciliation_id, []).append(f)
        return [ReconciliationResult(
            id=r.id, copy_node=r.copy_node, truth_node=r.truth_node, area=[a for a in r.area.split(",") if a], trigger=r.trigger,
            started_at=r.started_at, finished_at=r.finished_at, ranges_compared=r.ranges_compared, ranges_descended=r.ranges_descended,
            persons_compared=r.persons_compared, differing=r.differing, healed=r.healed, reported=r.reported, requests=r.requests,
            bytes_exchanged=r.bytes_exchanged, outcome=r.outcome, error=r.error,
            findings=[Finding(
                resident_code=f.resident_code, kind=f.kind, copy_version=f.copy_version, truth_version=f.truth_version, copy_state=f.copy_state,
                truth_state=f.truth_state, action=f.action, applied=f.applied, detail=f.detail,
            ) for f in found.get(r.id, [])],
        ) for r in rows]

    def router(self) -> APIRouter:
        """Digests of this store for the tier above (network nodes), and the operator's view and trigger."""
        router = APIRouter(prefix="/internal/v1", tags=["reconciliation"])
        from_network = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=is_network_node)
        operator = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=lambda party: party == "operator")
        add_digest_routes(router, "/reconciliation", lambda: self.rt.engine.connect(), self.table, from_network)

        @router.post("/operator/reconcile", tags=["operations"], response_model=list[ReconciliationResult], dependencies=[Depends(operator)])
        async def reconcile_now() -> list[ReconciliationResult]:
            """Operator: compare with every tier below now, heal, and answer what was found."""
            if not self.counterparts:
                from services.common.problems import ProblemError

                raise ProblemError(409, "reconciled-by-register", "The register compares itself with this CS",
                                   f"nothing calls into the register: run it there (cli reconcile --node municipal_rrs.{self.rt.settings.tenant})")
            return await self.reconcile_all(trigger="operator")

        @router.get("/operator/reconciliations", tags=["operations"], response_model=list[ReconciliationResult], dependencies=[Depends(operator)])
        async def reconciliations(limit: int = Query(20, ge=1, le=500)) -> list[ReconciliationResult]:
            """Operator: the last comparisons with the tiers below, newest first, with what each found and healed."""
            return await self.history(limit)

        return router


def holds_copies_of(party: str, municipality_code: str) -> bool:
    """Whether a network node keeps copies of this municipality's 本人確認情報, and so may compare them.

    The national server holds every municipality, a prefecture server those
    whose code begins with its prefecture's, a CS its own. No other node may
    ask a tier for digests or states of an area: a CS in one prefecture
    learns nothing about the residents of another.
    """
    if party == "national":
        return True
    if party.startswith("pref-"):
        return municipality_code[:2] == party.removeprefix("pref-")
    if party.startswith("cs-"):
        return municipality_code == party.removeprefix("cs-")
    return False


def add_digest_routes(router: APIRouter, prefix: str, connect, table: sql.DigestTable, verifier, *, may_compare: Callable[[str, str], bool] = holds_copies_of) -> None:
    """``digests``, ``rows`` and ``persons`` of one table under ``prefix`` (the answering side of a comparison).

    ``verifier`` checks the caller's token; ``may_compare(issuer, municipality_code)``
    decides which municipalities that caller may learn about: an area naming
    any other is refused, and persons registered elsewhere are left out.
    """
    from services.common.problems import ProblemError

    caller_token = Depends(verifier)

    def area_for(caller: VerifiedToken, requested: list[str]) -> list[str]:
        outside = sorted(code for code in requested if not may_compare(caller.issuer, code))
        if outside:
            raise ProblemError(403, "outside-area", "The area asked for is not one the caller keeps copies of", f"{caller.issuer} may not compare {', '.join(outside)}")
        return requested

    @router.post(f"{prefix}/digests", response_model=DigestAnswer)
    async def digests(request: DigestRequest, caller: VerifiedToken = caller_token) -> DigestAnswer:
        """Digests (persons, XOR of hashes) of the ranges of ``length`` leading digits under each prefix."""
        area = area_for(caller, request.area)
        async with connect() as conn:
            return DigestAnswer(digests=await sql.range_digests(conn, table, area, request.prefixes, request.length))

    @router.post(f"{prefix}/rows", response_model=PersonStates)
    async def rows(request: RangeRequest, caller: VerifiedToken = caller_token) -> PersonStates:
        """(code, version, status, municipality) of every person of the area under the prefixes."""
        area = area_for(caller, request.area)
        async with connect() as conn:
            found = await sql.range_rows(conn, table, area, request.prefixes)
        return PersonStates(persons=list(sql.states(found).values()))

    @router.post(f"{prefix}/persons", response_model=PersonStates)
    async def persons(request: PersonsRequest, caller: VerifiedToken = caller_token) -> PersonStates:
        """(code, version, status, municipality) of these persons, if registered where the caller keeps copies."""
        async with connect() as conn:
            found = await sql.persons(conn, table, request.resident_codes)
        return PersonStates(persons=[state for state in found.values() if may_compare(caller.issuer, state.municipality_code)])


def summarise(copy_node: str, truth_node: str, area: list[str], trigger: str, started: datetime, comparison, findings: list[Finding]) -> ReconciliationResult:
    healed = sum(1 for f in findings if f.action in ("resynced", "replayed") and f.applied > 0)
    reported = sum(1 for f in findings if f.action in ("reported", "failed"))
    outcome = "differences-reported" if reported else ("healed" if healed else "consistent")
    return ReconciliationResult(
        copy_node=copy_node, truth_node=truth_node, area=area, trigger=trigger, started_at=started, finished_at=datetime.now(UTC),
        ranges_compared=comparison.ranges_compared, ranges_descended=comparison.ranges_descended, persons_compared=comparison.persons_compared,
        differing=len(findings), healed=healed, reported=reported, requests=comparison.requests, outcome=outcome, findings=findings[:5000],
    )


def counterparts_of(topology, node: Node) -> list[tuple[str, list[str]]]:
    """The tiers below a node and the area each is compared over."""
    if node.kind == "national_server":
        if topology.network.prefecture_tier:
            return [(f"prefecture_server.{p.code}", [m.code for m in topology.municipalities if m.prefecture == p.code]) for p in topology.prefectures
                    if any(m.prefecture == p.code for m in topology.municipalities)]
        return [(f"cs_gateway.{m.code}", [m.code]) for m in topology.municipalities]
    if node.kind == "prefecture_server":
        return [(f"cs_gateway.{m.code}", [m.code]) for m in topology.municipalities if m.prefecture == node.tenant]
    return []

