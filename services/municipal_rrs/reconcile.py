"""The register compares itself with its CS and re-sends what the CS lacks.

The register is the truth for its municipality, and nothing may call into it
(R-NET-1), so it drives this comparison: it asks its CS for range digests of
the CS's copy, compares them with its own records (本人確認情報 items only:
code, version, status, municipality), and for a person whose copy lacks
versions it queues the identity changes it sent before once more (its outbox
keeps them); the CS applies them under the version rules. The result goes to
the CS, which records it with its other reconciliations.

Records closed by a completed move (転出確定) are not compared here: the
network knows the person in the new municipality.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from sqlalchemy import select, update

from contracts.recovery import PersonState, ReconciliationResult
from services.common.auth import bearer_verifier
from services.common.digests import DigestTable
from services.common.reconcile import SqlSide, classify_and_heal, compare
from services.common.reconciliation import RemoteSide, note_reconciliation, summarise
from services.municipal_rrs.models import Outbox

log = logging.getLogger(__name__)

REGISTER = DigestTable("residents", "not (t.status = 'removed' and t.last_change = 'move_out' and t.pending_move is null)")


class RegisterReconciler:
    def __init__(self, rt, *, municipality_code: str, relay):
        self.rt = rt
        self.code = municipality_code
        self.cs = f"cs_gateway.{municipality_code}"
        self.relay = relay
        self._lock = asyncio.Lock()

    async def replay(self, copy: PersonState | None, truth: PersonState) -> tuple[str, int, str | None]:
        """Queue again the identity changes of this person the CS lacks (oldest first, as the relay sends)."""
        after = copy.version if copy is not None else 0
        async with self.rt.sessions() as session, session.begin():
            rows = (await session.execute(
                select(Outbox.id, Outbox.payload).where(Outbox.kind == "identity-change", Outbox.key == truth.resident_code).order_by(Outbox.id)
            )).all()
            wanted = [row_id for row_id, payload in rows if json.loads(payload)["version"] > after]
            if not wanted:
                return "failed", 0, f"the register holds no sent change after v{after} (restored from the network?)"
            await session.execute(update(Outbox).where(Outbox.id.in_(wanted)).values(sent_at=None, last_error="re-sent by reconciliation"))
        self.relay.wakeup.set()
        return "replayed", len(wanted), f"{len(wanted)} change(s) after v{after} queued for the CS again"

    async def reconcile(self, *, trigger: str = "schedule") -> ReconciliationResult:
        started = datetime.now(UTC)
        async with self._lock:
            copy = RemoteSide(self.rt, self.cs, [self.code], path="/v1/rrs/reconciliation")
            truth = SqlSide(self.rt.engine.connect, REGISTER, [self.code])
            comparison = await compare(copy, truth)
            findings, _ = await classify_and_heal(copy, truth, [self.code], comparison.differing, heal=self.replay, grace_seconds=self.rt.settings.reconcile_grace_seconds)
            result = summarise(self.cs, f"municipal_rrs.{self.code}", [self.code], trigger, started, comparison, findings)
            result = result.model_copy(update={"bytes_exchanged": copy.bytes})
            response = await self.rt.http.post(
                f"{self.rt.settings.peer(self.cs)}/v1/rrs/reconciliation/report", content=result.model_dump_json(), timeout=60.0,
                headers={"content-type": "application/json", "authorization": f"Bearer {self.rt.token_for(f'cs-{self.code}')}"},
            )
            if response.status_code == 200:
                result = ReconciliationResult.model_validate_json(response.content)
            else:
                log.warning("the CS did not record the reconciliation (%s): %s", response.status_code, response.text[:300])
            note_reconciliation(self.cs, result.finished_at or datetime.now(UTC), result.healed, result.reported)
            return result

    async def run_forever(self) -> None:
        period = self.rt.settings.reconcile_seconds
        if period <= 0:
            return
        while True:
            await asyncio.sleep(period)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the CS may be down: the next pass tries again
                log.warning("reconciliation with the CS failed: %s", exc)

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/internal/v1/operator", tags=["operations"])
        operator = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=lambda party: party == "operator")

        @router.post("/reconcile", response_model=list[ReconciliationResult], dependencies=[Depends(operator)])
        async def reconcile_now() -> list[ReconciliationResult]:
            """Operator: compare the register with its CS now and re-send what the CS lacks."""
            from services.common.problems import ProblemError

            try:
                return [await self.reconcile(trigger="operator")]
            except Exception as exc:
                raise ProblemError(502, "cs-unavailable", "The comparison with the CS did not complete", f"{type(exc).__name__}: {exc}"[:500]) from None

        return router
