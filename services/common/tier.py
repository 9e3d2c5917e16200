"""What every network tier (CS, prefecture, national) does with identity changes:
apply them under the version rules, forward what was applied, heal gaps by
asking the tier below, and answer the tier above when it asks."""


import asyncio
import logging
from collections.abc import Callable

from aiokafka import ConsumerRecord
from fastapi import APIRouter, Depends, Query
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.identifiers import ResidentCode
from contracts.base import BIGINT_MAX
from contracts.identity import IdentityChange, IdentityChangeBatch
from services.common.auth import bearer_verifier, is_network_node
from services.common.identity_store import ApplyOutcome, IdentityTables, VersionConflict, apply_change, changes_after, mark_gaps_healed, persons_with_gaps
from services.common.kafka import Refuse, consume_span
from services.common.outbox import enqueue
from services.common.runtime import Runtime
from services.common.topology import Node

log = logging.getLogger(__name__)


class Tier:
    def __init__(self, rt: Runtime, tables: IdentityTables, outbox_model, *, forward_to: Callable[[IdentityChange], str | None] | None, source_of: Callable[[IdentityChange], str] | None,
                 check=None, on_applied=None, arriving=None):
        self.rt = rt
        self.tables = tables
        self.outbox = outbox_model
        self.forward_to = forward_to  # where an applied change goes next; None from it: nowhere
        self.source_of = source_of  # node id of the tier below for this change, for resync
        self.check = check
        self.on_applied = on_applied  # async (session, changes applied, in order): more work in the same transaction
        self.arriving = arriving  # (current row, change) -> bool: a move brings the person into this tier's area

    async def receive(self, session: AsyncSession, change: IdentityChange) -> ApplyOutcome:
        """Apply one change in the caller's transaction and queue what was applied for the tier above."""
        outcome = await self._apply(session, change)
        await self._after_applied(session, outcome.applied)
        return outcome

    async def _apply(self, session: AsyncSession, change: IdentityChange) -> ApplyOutcome:
        try:
            return await apply_change(session, self.tables, change, check=self.check, arriving=self.arriving)
        except IntegrityError as exc:
            raise Refuse(f"conflicts with a stored identity: {exc.orig}") from None
        except VersionConflict as exc:
            raise Refuse(str(exc)) from None

    async def _after_applied(self, session: AsyncSession, applied: list[IdentityChange]) -> None:
        """What follows applied changes, in their order: the hooks, then the changes queued for the tier above."""
        if self.on_applied is not None and applied:
            await self.on_applied(session, applied)
        if self.forward_to is not None:
            for change in applied:
                destination = self.forward_to(change)
                if destination is not None:
                    enqueue(session, self.outbox, destination=destination, key=change.resident_code, kind="identity-change", payload=change.model_dump_json())

    @staticmethod
    def _change_of(record: ConsumerRecord, validate: Callable[[IdentityChange], None] | None) -> IdentityChange:
        change = IdentityChange.model_validate_json(record.value or b"")
        if record.key is not None and record.key.decode() != change.resident_code:
            raise Refuse("record key is not the resident code of the change")
        if validate is not None:
            validate(change)
        return change

    def kafka_handler(self, validate: Callable[[IdentityChange], None] | None = None, *, markers=None):
        """Identity changes; with ``markers``, also the DV protection markers that share the topic (services/common/protection.py)."""
        from services.common.protection import is_marker_record

        async def handle(session: AsyncSession, record: ConsumerRecord) -> None:
            if markers is not None and is_marker_record(record):
                await markers(session, record)
                return
            await self.receive(session, self._change_of(record, validate))

        return handle

    def kafka_batch_handler(self, validate: Callable[[IdentityChange], None] | None = None, *, markers=None):
        """:meth:`kafka_handler` for the records of one fetch: each change is applied in order, in the trace it was
        sent in (so the row keeps that trace), and what follows an applied change (``on_applied``, the forwarding)
        runs once for all of them, before any protection marker among them is taken. At the national server that is
        one read of the follows of a whole fetch, not one per change."""
        from services.common.protection import is_marker_record

        async def handle(session: AsyncSession, records: list[ConsumerRecord]) -> None:
            applied: list[IdentityChange] = []
            for record in records:
                with consume_span(record, consumer=self.rt.party):
                    if markers is not None and is_marker_record(record):
                        await self._after_applied(session, applied)
                        applied = []
                        await markers(session, record)
                        continue
                    applied.extend((await self._apply(session, self._change_of(record, validate))).applied)
            await self._after_applied(session, applied)

        return handle

    async def heal_gaps_once(self) -> int:
        """Fetch missing versions from the tier below for every person with held changes."""
        healed = 0
        async with self.rt.sessions() as session:
            pending = await persons_with_gaps(session, self.tables)
        for resident_code, held_version in pending:
            async with self.rt.sessions() as session:
                sample = (await session.execute(
                    self.tables.held.__table__.select().where(self.tables.held.resident_code == resident_code).limit(1)
                )).first()
            if sample is None or self.source_of is None:
                continue
            source = self.source_of(IdentityChange.model_validate_json(sample.payload))
            party = Node(kind=source.split(".", 1)[0], tenant=source.split(".", 1)[1]).party
            try:
                response = await self.rt.http.get(
                    f"{self.rt.settings.peer(source)}/internal/v1/identity/{resident_code}/changes",
                    params={"after": held_version}, headers={"authorization": f"Bearer {self.rt.token_for(party)}"},
                )
                response.raise_for_status()
                batch = IdentityChangeBatch.model_validate_json(response.content)
            except Exception as exc:
                log.warning("resync of %s from %s failed: %s", resident_code, source, exc)
                continue
            async with self.rt.sessions() as session, session.begin():
                for change in batch.changes:
                    await self.receive(session, change)
                await mark_gaps_healed(session, self.tables, resident_code, healed_by=f"resync from {source}")
            healed += 1
        return healed

    async def heal_gaps_forever(self) -> None:
        while True:
            try:
                await self.heal_gaps_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gap healing pass failed")
            await asyncio.sleep(self.rt.settings.resync_poll_seconds)

    async def resync_person(self, resident_code: str) -> dict:
        """Operator resync: ask the tier below for every change of one person after the version held here."""
        async with self.rt.sessions() as session:
            current = (await session.execute(self.tables.current.__table__.select().where(self.tables.current.resident_code == resident_code))).first()
            held = (await session.execute(self.tables.held.__table__.select().where(self.tables.held.resident_code == resident_code).limit(1))).first()
        known = current if current is not None else held
        if self.source_of is None:
            raise LookupError("this tier has no tier below it that answers resync requests")
        if known is None:
            raise LookupError(f"{resident_code} is unknown here; nothing tells which tier below holds the person")
        source = self.source_of(IdentityChange.model_validate_json(known.payload))
        party = Node(kind=source.split(".", 1)[0], tenant=source.split(".", 1)[1]).party
        held_version = current.version if current is not None else 0
        response = await self.rt.http.get(
            f"{self.rt.settings.peer(source)}/internal/v1/identity/{resident_code}/changes",
            params={"after": held_version}, headers={"authorization": f"Bearer {self.rt.token_for(party)}"},
        )
        response.raise_for_status()
        batch = IdentityChangeBatch.model_validate_json(response.content)
        applied = 0
        async with self.rt.sessions() as session, session.begin():
            for change in batch.changes:
                applied += len((await self.receive(session, change)).applied)
            await mark_gaps_healed(session, self.tables, resident_code, healed_by=f"operator resync from {source}")
        return {"resident_code": resident_code, "source": source, "held_version": held_version, "received": len(batch.changes), "applied": applied}

    def internal_router(self) -> APIRouter:
        """Resync answers for the tier above (network nodes only, signed tokens)."""
        router = APIRouter(prefix="/internal/v1", tags=["resync"])
        verify = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=is_network_node)

        @router.get("/identity/{resident_code}/changes", response_model=IdentityChangeBatch, dependencies=[Depends(verify)])
        async def changes(resident_code: ResidentCode, after: int = Query(0, ge=0, le=BIGINT_MAX)) -> IdentityChangeBatch:
            """This tier's changes of one person after a version, oldest first."""
            async with self.rt.sessions() as session:
                found = await changes_after(session, self.tables, resident_code, after)
            return IdentityChangeBatch(resident_code=resident_code, changes=found)

        operator = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=lambda party: party == "operator")

        @router.post("/operator/resync/{resident_code}", tags=["operations"], dependencies=[Depends(operator)])
        async def resync(resident_code: ResidentCode) -> dict:
            """Operator: fetch this person's missing changes from the tier below now."""
            from services.common.problems import ProblemError

            try:
                return await self.resync_person(resident_code)
            except LookupError as exc:
                raise ProblemError(409, "cannot-resync", "This person cannot be resynced here", str(exc)) from None

        return router
