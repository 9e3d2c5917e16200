"""Snapshots received from the CSs and disaster recovery, at a prefecture server
(or at the national server when the network has no prefecture tier).

A CS keeps its snapshot here range by range (only the ranges whose digests
differ travel); the snapshot is sealed when the rows kept here have the digest
the CS announced. After a disaster, the municipality — and only the
municipality, with a token signed by its own key (``rrs-<code>``, scope
``disaster-recovery``) — gets back the 本人確認情報 and history of everyone
registered in it, from the current store or the snapshot, whichever is newer.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import delete, desc, select, text, update
from sqlalchemy.dialects.postgresql import insert

from contracts.recovery import (
    RECOVERY_SCOPE, DigestAnswer, DigestRequest, RecoveredProtection, RecoverySummary, SnapshotInfo, SnapshotRanges, SnapshotReceipt, SnapshotSeal,
)
from services.common import digests as sql
from services.common.auth import bearer_verifier
from services.common.problems import ProblemError
from services.common.reconciliation import note_snapshot
from services.common.tokens import VerifiedToken

log = logging.getLogger(__name__)

SNAPSHOT_ROWS = sql.DigestTable("snapshot_rows")
EXPORT_CHUNK = 500


class SnapshotStore:
    """The receiving side of snapshots and the network side of a restore."""

    def __init__(self, rt, models: dict, *, municipalities: set[str]):
        self.rt = rt
        self.Received = models["SnapshotReceived"]
        self.Row = models["SnapshotRow"]
        self.Export = models["RecoveryExport"]
        self.municipalities = municipalities

    def _ours(self, municipality_code: str) -> None:
        if municipality_code not in self.municipalities:
            raise ProblemError(404, "not-found", "This node keeps nothing for that municipality", f"{self.rt.settings.node.id} serves {', '.join(sorted(self.municipalities))}")

    # --- receiving ------------------------------------------------------------------------------------------
    async def digests(self, municipality_code: str, request: DigestRequest) -> DigestAnswer:
        if request.area != [municipality_code]:
            raise ProblemError(422, "wrong-area", "A snapshot is compared over its own municipality only")
        async with self.rt.engine.connect() as conn:
            return DigestAnswer(digests=await sql.range_digests(conn, SNAPSHOT_ROWS, [municipality_code], request.prefixes, request.length))

    async def replace_ranges(self, municipality_code: str, part: SnapshotRanges, source: str) -> int:
        lows, highs = zip(*[(p.ljust(11, "0"), p.ljust(11, "9")) for p in part.prefixes], strict=True)
        rows = []
        for r in part.rows:
            c = r.change
            if (r.municipality_code != municipality_code or c.resident_code != r.resident_code or c.version != r.version
                    or c.status != r.status or c.municipality_code != r.municipality_code):
                raise ProblemError(422, "invalid-snapshot-row", "A snapshot row does not match its change or its municipality", f"row {r.resident_code} v{r.version}")
            if not any(lo <= r.resident_code <= hi for lo, hi in zip(lows, highs, strict=True)):
                raise ProblemError(422, "invalid-snapshot-row", "A snapshot row lies outside the ranges it replaces", r.resident_code)
            rows.append(dict(municipality_code=municipality_code, resident_code=r.resident_code, version=r.version, status=r.status.value,
                             payload=c.model_dump_json(), snapshot_id=part.snapshot_id))
        async with self.rt.sessions() as session, session.begin():
            for lo, hi in zip(lows, highs, strict=True):
                await session.execute(delete(self.Row).where(self.Row.municipality_code == municipality_code, self.Row.resident_code.between(lo, hi)))
            if rows:
                await session.execute(insert(self.Row), rows)
            stmt = insert(self.Received).values(
                id=part.snapshot_id, municipality_code=municipality_code, source=source, taken_at=part.taken_at, persons=0,
                ranges_received=len(part.prefixes), rows_received=len(rows), state="receiving",
            ).on_conflict_do_update(index_elements=["id"], set_={
                "ranges_received": self.Received.ranges_received + len(part.prefixes), "rows_received": self.Received.rows_received + len(rows),
            })
            await session.execute(stmt)
        return len(rows)

    async def seal(self, municipality_code: str, seal: SnapshotSeal, source: str) -> SnapshotReceipt:
        """Complete when the rows kept here have the digest the CS announced (else ``mismatch``, kept for the operator)."""
        async with self.rt.sessions() as session, session.begin():
            held = (await sql.range_digests(await session.connection(), SNAPSHOT_ROWS, [municipality_code], [""], 0)).get("", sql.digest_text(0, 0))
            state = "complete" if held == seal.digest else "mismatch"
            now = datetime.now(UTC)
            await session.execute(insert(self.Received).values(
                id=seal.snapshot_id, municipality_code=municipality_code, source=source, taken_at=seal.taken_at, persons=seal.persons,
                digest=seal.digest, ranges_received=0, rows_received=0, state=state, sealed_at=now,
            ).on_conflict_do_update(index_elements=["id"], set_={"persons": seal.persons, "digest": seal.digest, "state": state, "sealed_at": now}))
        if state == "complete":
            note_snapshot(municipality_code, now)
        else:
            log.warning("snapshot %s of %s does not match: announced %s, kept %s", seal.snapshot_id, municipality_code, seal.digest, held)
        return SnapshotReceipt(snapshot_id=seal.snapshot_id, municipality_code=municipality_code, state=state, persons=sql.digest_count(held), digest=held,
                               detail=None if state == "complete" else f"the CS announced {seal.digest}")

    async def listing(self, limit: int) -> list[SnapshotInfo]:
        async with self.rt.sessions() as session:
            rows = (await session.execute(select(self.Received).order_by(desc(self.Received.received_at)).limit(limit))).scalars().all()
        return [SnapshotInfo(snapshot_id=r.id, municipality_code=r.municipality_code, peer=r.source, taken_at=r.taken_at, sealed_at=r.sealed_at,
                             persons=r.persons, digest=r.digest, ranges=r.ranges_received, rows=r.rows_received, state=r.state) for r in rows]

    async def load_last(self) -> None:
        async with self.rt.sessions() as session:
            rows = (await session.execute(select(self.Received.municipality_code, self.Received.sealed_at).where(self.Received.state == "complete")
                                          .order_by(self.Received.sealed_at))).all()
        for municipality_code, sealed_at in rows:
            note_snapshot(municipality_code, sealed_at)

    # --- recovery ---------------------------------------------------------------------------------------------
    async def summary(self, municipality_code: str) -> RecoverySummary:
        async with self.rt.sessions() as session:
            current = (await session.execute(text("select count(*) from identity where municipality_code = :m"), {"m": municipality_code})).scalar_one()
            in_snapshot = (await session.execute(text("select count(*) from snapshot_rows where municipality_code = :m"), {"m": municipality_code})).scalar_one()
            last = (await session.execute(select(self.Received).where(self.Received.municipality_code == municipality_code, self.Received.state == "complete")
                                          .order_by(desc(self.Received.sealed_at)).limit(1))).scalar_one_or_none()
        return RecoverySummary(municipality_code=municipality_code, provider=self.rt.settings.node.id, persons_current=current, persons_in_snapshot=in_snapshot,
                               snapshot_taken_at=last.taken_at if last else None, snapshot_state=last.state if last else None)

    async def export_lines(self, municipality_code: str, export_id: int):
        """NDJSON lines of :class:`contracts.recovery.RecoveredPerson`, built from the stored payloads as they are.

        A person a DV support measure protects carries the protection marker held here (``protected: true``
        only: resident code, last day, as of); the measure's details never reached this tier.
        """
        query = text("""
            select s.code, i.version, i.municipality_code, i.payload, r.version, r.payload,
                   (select string_agg(h.payload, ',' order by h.version) from identity_history h
                     where h.resident_code = s.code and h.version <= greatest(coalesce(i.version, 0), coalesce(r.version, 0))),
                   p.resident_code, p.valid_until, p.as_of
              from (select resident_code from identity where municipality_code = :m
                    union select resident_code from snapshot_rows where municipality_code = :m) as s(code)
              left join identity i on i.resident_code = s.code
              left join snapshot_rows r on r.municipality_code = :m and r.resident_code = s.code
              left join protection_markers p on p.resident_code = s.code and p.protected
             order by s.code""")
        sent = 0
        async with self.rt.engine.connect() as conn:
            result = await conn.stream(query, {"m": municipality_code})
            chunk: list[str] = []
            async for code, cur_version, cur_municipality, cur_payload, snap_version, snap_payload, history, marked, valid_until, as_of in result:
                if cur_version is not None and (snap_version is None or cur_version >= snap_version):
                    if cur_municipality != municipality_code:
                        continue  # registered elsewhere now: the snapshot is older than the move
                    source, payload, version = "current", cur_payload, cur_version
                else:
                    source, payload, version = "snapshot", snap_payload, snap_version
                past = history or ""
                if not past.endswith(payload):  # the snapshot holds a version the history here lacks
                    past = f"{past},{payload}" if past else payload
                protection = "" if marked is None else ',"protection":' + RecoveredProtection(resident_code=code, valid_until=valid_until, as_of=as_of).model_dump_json()
                chunk.append(f'{{"resident_code":"{code}","source":"{source}","current":{payload},"history":[{past}]{protection}}}\n')
                sent += 1
                if len(chunk) >= EXPORT_CHUNK:
                    yield "".join(chunk)
                    chunk = []
            if chunk:
                yield "".join(chunk)
        async with self.rt.sessions() as session, session.begin():
            await session.execute(update(self.Export).where(self.Export.id == export_id).values(persons=sent, finished_at=datetime.now(UTC)))

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/internal/v1", tags=["snapshots and recovery"])
        from_cs = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=lambda party: party.startswith("cs-"))
        from_register = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=lambda party: party.startswith("rrs-"))
        operator = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=lambda party: party == "operator")
        Municipality = Path(pattern=r"^[0-9]{6}$")

        def own_cs(municipality_code: str, token: VerifiedToken) -> str:
            self._ours(municipality_code)
            if token.issuer != f"cs-{municipality_code}":
                raise ProblemError(403, "not-this-municipality", "Only the municipality's own CS sends its snapshot", f"{token.issuer} is not cs-{municipality_code}")
            return token.issuer

        def municipality_authorised(municipality_code: str, token: VerifiedToken) -> None:
            """A restore needs the municipality's own signature (its key), for this municipality, for this purpose."""
            self._ours(municipality_code)
            if token.issuer != f"rrs-{municipality_code}":
                raise ProblemError(403, "recovery-not-authorised", "A restore needs the municipality's authorisation", f"signed by {token.issuer}, not by rrs-{municipality_code}")
            if token.claims.get("scope") != RECOVERY_SCOPE or token.claims.get("municipality") != municipality_code:
                raise ProblemError(403, "recovery-not-authorised", "A restore needs the municipality's authorisation", f"the token is not a {RECOVERY_SCOPE} authorisation for {municipality_code}")

        @router.post("/snapshots/{municipality_code}/digests", response_model=DigestAnswer)
        async def snapshot_digests(body: DigestRequest, municipality_code: str = Municipality, token: VerifiedToken = Depends(from_cs)) -> DigestAnswer:
            """The CS compares its store with the snapshot kept here, range by range."""
            own_cs(municipality_code, token)
            return await self.digests(municipality_code, body)

        @router.put("/snapshots/{municipality_code}/ranges", response_model=dict)
        async def snapshot_ranges(body: SnapshotRanges, municipality_code: str = Municipality, token: VerifiedToken = Depends(from_cs)) -> dict:
            """Replace these ranges of the municipality's snapshot (one part of a snapshot)."""
            source = own_cs(municipality_code, token)
            return {"snapshot_id": str(body.snapshot_id), "rows": await self.replace_ranges(municipality_code, body, source)}

        @router.post("/snapshots/{municipality_code}/seal", response_model=SnapshotReceipt)
        async def snapshot_seal(body: SnapshotSeal, municipality_code: str = Municipality, token: VerifiedToken = Depends(from_cs)) -> SnapshotReceipt:
            """Close a snapshot: complete when the rows kept here have the announced digest."""
            source = own_cs(municipality_code, token)
            return await self.seal(municipality_code, body, source)

        @router.get("/operator/snapshots", tags=["operations"], response_model=list[SnapshotInfo], dependencies=[Depends(operator)])
        async def snapshots(limit: int = Query(20, ge=1, le=500)) -> list[SnapshotInfo]:
            """Operator: snapshots received, newest first."""
            return await self.listing(limit)

        @router.get("/recovery/{municipality_code}", response_model=RecoverySummary)
        async def recovery_summary(municipality_code: str = Municipality, token: VerifiedToken = Depends(from_register)) -> RecoverySummary:
            """What the network can give back to the municipality (asked before anything is wiped)."""
            municipality_authorised(municipality_code, token)
            return await self.summary(municipality_code)

        @router.get("/recovery/{municipality_code}/export", response_class=StreamingResponse, responses={200: {"content": {"application/x-ndjson": {}}}})
        async def recovery_export(request: Request, municipality_code: str = Municipality, token: VerifiedToken = Depends(from_register)) -> StreamingResponse:
            """Every person registered in the municipality: newest version held here (current store or snapshot) and its history, NDJSON; recorded."""
            municipality_authorised(municipality_code, token)
            async with self.rt.sessions() as session, session.begin():
                row = self.Export(municipality_code=municipality_code, requested_by=token.issuer, token_id=str(token.claims.get("jti", ""))[:64], persons=0)
                session.add(row)
                await session.flush()
                export_id = row.id
            return StreamingResponse(self.export_lines(municipality_code, export_id), media_type="application/x-ndjson")

        return router


def tier_recovery(rt, tier, models: dict, *, municipalities: set[str], counterparts) -> tuple[list[APIRouter], list]:
    """Routers and background loops of snapshots and reconciliation for a prefecture or national server."""
    from services.common.reconciliation import Reconciler

    reconciler = Reconciler(rt, tier, models, counterparts=counterparts)
    store = SnapshotStore(rt, models, municipalities=municipalities)

    async def load_snapshot_gauges() -> None:
        try:
            await store.load_last()
        except Exception:
            log.exception("could not read the last snapshots")

    return [reconciler.router(), store.router()], [reconciler.run_forever, load_snapshot_gauges]

