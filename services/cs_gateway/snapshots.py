"""The CS's snapshots (R-NET-2) and its side of reconciliation.

- **Snapshots.** Every ``JUKINET_SNAPSHOT_SECONDS`` the CS sends the
  本人確認情報 of everyone registered in its municipality to the tier above
  (its prefecture server, or the national server without that tier). It
  reads its store in one REPEATABLE READ transaction (one instant), compares
  range digests with the copy kept above, sends only the ranges that differ,
  and seals the snapshot with the digest of the whole; the receiver accepts
  the seal only if its copy has that digest. Those copies served as the
  backup of municipal systems after the 2011 earthquake.
- **Reconciliation with the register.** Nothing calls into the register, so
  the register compares itself with the CS (``/v1/rrs/reconciliation/…``,
  its own token only, its own municipality only) and re-sends what the CS
  lacks; the CS records each run and its findings with the others.
- The CS answers digests of its store to the tier above like every tier.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query
from sqlalchemy import desc, select

from contracts.recovery import ReconciliationResult, SnapshotInfo, SnapshotRanges, SnapshotReceipt, SnapshotRow, SnapshotSeal
from contracts.identity import IdentityChange
from services.common import digests as sql
from services.common.auth import bearer_verifier
from services.common.problems import ProblemError
from services.common.reconcile import Comparison, SqlSide, batches, differing_leaves, held
from services.common.reconciliation import IDENTITY, Reconciler, RemoteSide, add_digest_routes, note_snapshot, party_of

log = logging.getLogger(__name__)

#: Ranges of at most this many persons are sent whole instead of being split further.
SNAPSHOT_LEAF = 1000
ROWS_PER_PART = 2000
FIRST_SNAPSHOT_AFTER_SECONDS = 10.0


class SnapshotSender:
    def __init__(self, rt, *, municipality_code: str, destination: str, model):
        self.rt = rt
        self.code = municipality_code
        self.destination = destination
        self.Sent = model
        self._lock = asyncio.Lock()

    async def _put(self, what: str, body, *, method: str = "POST") -> bytes:
        payload = body.model_dump_json()
        response = await self.rt.http.request(
            method, f"{self.rt.settings.peer(self.destination)}/internal/v1/snapshots/{self.code}/{what}", content=payload, timeout=120.0,
            headers={"content-type": "application/json", "authorization": f"Bearer {self.rt.token_for(party_of(self.destination))}"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"{self.destination} answered {response.status_code} to {what}: {response.text[:300]}")
        self._bytes += len(payload)
        return response.content

    async def take(self) -> SnapshotInfo:
        """Take one snapshot and send what changed since the last one; recorded whatever happens."""
        async with self._lock:
            snapshot_id, taken_at = uuid.uuid4(), datetime.now(UTC)
            self._bytes = 0
            started = time.monotonic()
            async with self.rt.sessions() as session, session.begin():
                session.add(self.Sent(id=snapshot_id, destination=self.destination, taken_at=taken_at, persons=0, ranges_sent=0, rows_sent=0, bytes_sent=0, state="sending"))
            ranges = rows_sent = 0
            receipt: SnapshotReceipt | None = None
            try:
                conn = await self.rt.engine.connect()
                try:
                    conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                    async with conn.begin():  # one instant of the store, however long the transfer takes
                        local = SqlSide(held(conn), IDENTITY, [self.code])
                        remote = RemoteSide(self.rt, self.destination, [self.code], path=f"/internal/v1/snapshots/{self.code}")
                        comparison = Comparison()
                        leaves = await differing_leaves(local, remote, comparison, leaf_persons=SNAPSHOT_LEAF)
                        for group in batches(leaves, ROWS_PER_PART):
                            found = await sql.range_rows(conn, IDENTITY, [self.code], group, extra_columns="t.payload")
                            part = SnapshotRanges(snapshot_id=snapshot_id, taken_at=taken_at, prefixes=group, rows=[
                                SnapshotRow(resident_code=r[0], version=r[1], status=r[2], municipality_code=r[3], change=IdentityChange.model_validate_json(r[4]))
                                for r in found
                            ])
                            await self._put("ranges", part, method="PUT")
                            ranges += len(group)
                            rows_sent += len(found)
                        digest = comparison.root_digest or sql.digest_text(0, 0)
                        receipt = SnapshotReceipt.model_validate_json(await self._put(
                            "seal", SnapshotSeal(snapshot_id=snapshot_id, taken_at=taken_at, persons=sql.digest_count(digest), digest=digest)))
                finally:
                    await conn.close()
                state, detail = receipt.state, receipt.detail
            except Exception as exc:
                log.warning("snapshot %s to %s failed: %s", snapshot_id, self.destination, exc)
                state, detail, digest = "failed", f"{type(exc).__name__}: {exc}"[:2000], None
            sealed_at = datetime.now(UTC) if state == "complete" else None
            async with self.rt.sessions() as session, session.begin():
                row = await session.get(self.Sent, snapshot_id)
                row.persons = sql.digest_count(digest)
                row.digest, row.ranges_sent, row.rows_sent, row.bytes_sent = digest, ranges, rows_sent, self._bytes
                row.sealed_at, row.state = sealed_at, state
                row.detail = detail or f"{time.monotonic() - started:.1f} s"
            if sealed_at is not None:
                note_snapshot(self.code, sealed_at)
            return SnapshotInfo(snapshot_id=snapshot_id, municipality_code=self.code, peer=self.destination, taken_at=taken_at, sealed_at=sealed_at,
                                persons=sql.digest_count(digest), digest=digest, ranges=ranges, rows=rows_sent, state=state, detail=row.detail)

    async def listing(self, limit: int) -> list[SnapshotInfo]:
        async with self.rt.sessions() as session:
            rows = (await session.execute(select(self.Sent).order_by(desc(self.Sent.taken_at)).limit(limit))).scalars().all()
        return [SnapshotInfo(snapshot_id=r.id, municipality_code=self.code, peer=r.destination, taken_at=r.taken_at, sealed_at=r.sealed_at, persons=r.persons,
                             digest=r.digest, ranges=r.ranges_sent, rows=r.rows_sent, state=r.state, detail=r.detail) for r in rows]

    async def run_forever(self) -> None:
        """The first snapshot shortly after start, then every ``JUKINET_SNAPSHOT_SECONDS`` (0: on request only)."""
        try:
            async with self.rt.sessions() as session:
                last = (await session.execute(select(self.Sent.sealed_at).where(self.Sent.state == "complete").order_by(desc(self.Sent.sealed_at)).limit(1))).scalar_one_or_none()
            if last is not None:
                note_snapshot(self.code, last)
        except Exception:
            log.exception("could not read the last snapshot")
        period = self.rt.settings.snapshot_seconds
        if period <= 0:
            return
        await asyncio.sleep(min(FIRST_SNAPSHOT_AFTER_SECONDS, period))
        while True:
            try:
                await self.take()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("snapshot failed")
            await asyncio.sleep(period)


def cs_recovery(rt, tier, models: dict, *, municipality_code: str, topology) -> tuple[list[APIRouter], list]:
    """Routers and loops of the CS: snapshots, digests for the tier above, the register's reconciliation."""
    sender = SnapshotSender(rt, municipality_code=municipality_code, destination=topology.upstream_of_cs(municipality_code), model=models["SnapshotSent"])
    reconciler = Reconciler(rt, tier, models, counterparts=[])
    register = f"municipal_rrs.{municipality_code}"
    router = APIRouter(tags=["snapshots and reconciliation"])
    operator = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party == "operator")
    from_own_rrs = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party == f"rrs-{municipality_code}")

    @router.post("/internal/v1/operator/snapshot", tags=["operations"], response_model=SnapshotInfo, dependencies=[Depends(operator)])
    async def snapshot_now() -> SnapshotInfo:
        """Operator: take a snapshot now and send it upward."""
        return await sender.take()

    @router.get("/internal/v1/operator/snapshots", tags=["operations"], response_model=list[SnapshotInfo], dependencies=[Depends(operator)])
    async def snapshots(limit: int = Query(20, ge=1, le=500)) -> list[SnapshotInfo]:
        """Operator: snapshots taken, newest first."""
        return await sender.listing(limit)

    add_digest_routes(router, "/v1/rrs/reconciliation", rt.engine.connect, IDENTITY, from_own_rrs,
                      may_compare=lambda _register, code: code == municipality_code)  # the register knows only its own

    @router.post("/v1/rrs/reconciliation/report", response_model=ReconciliationResult, dependencies=[Depends(from_own_rrs)])
    async def register_report(result: ReconciliationResult) -> ReconciliationResult:
        """The register's comparison with this CS and what it re-sent: recorded here with the others."""
        if result.copy_node != rt.settings.node.id or result.truth_node != register or result.area != [municipality_code]:
            raise ProblemError(422, "wrong-report", "The report is not of this CS and its register")
        return await reconciler.record(result)

    return [reconciler.router(), router], [sender.run_forever, reconciler.run_forever]
