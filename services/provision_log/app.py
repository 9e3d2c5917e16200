"""The provision log's edges: the consumer of provision records, the Merkle
log's public API (checkpoints, proofs, leaves), incidents, the resident API
and the resident portal."""


import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from aiokafka import ConsumerRecord
from cryptography.hazmat.primitives import serialization
from fastapi import Body, Depends, FastAPI, Path, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import topics
from contracts.base import BIGINT_MAX
from contracts.provision import ProvisionRecord, ProvisionRecordList, WithheldRecord
from contracts.transparency import (
    ConsistencyProof, IncidentRecorded, IncidentReport, InclusionPaths, InclusionProof, LogLeaves, ResidentProvisionList,
)
from services.common.auth import bearer_verifier
from services.common.kafka import StoredOffsetConsumer
from services.common.problems import ProblemError, install_problem_handlers
from services.common.runtime import Runtime
from services.common.settings import ServiceSettings
from services.common.tokens import RESIDENT_CREDENTIAL_MAX_SECONDS, RESIDENT_CREDENTIAL_SCOPE, VerifiedToken, load_private_key
from services.provision_log import domain, store
from services.provision_log.models import ConsumerOffset, DeadLetter, MessageReceipt, Refusal
from services.provision_log.portal import portal_router
from services.provision_log.settings import LogSettings

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"


async def store_record(session: AsyncSession, record: ConsumerRecord) -> None:
    """Consumer handler: the record, its leaf and (by the caller) the offset, in one transaction."""
    await store.append_provision(session, ProvisionRecord.model_validate_json(record.value or b""))


async def store_records(session: AsyncSession, records: list[ConsumerRecord]) -> None:
    """The records of one fetch, their leaves and (by the caller) the last offset, in one transaction and a few statements."""
    await store.append_provisions(session, [ProvisionRecord.model_validate_json(r.value or b"") for r in records])


class LogKeeper:
    """Background duties: append records stored before the tree existed, sign
    checkpoints while the tree grows, erase expired entries."""

    def __init__(self, rt: Runtime, log_settings: LogSettings):
        self._rt = rt
        self._settings = log_settings
        self._key = load_private_key(rt.settings.private_key)

    async def checkpoint_once(self) -> None:
        try:
            async with self._rt.sessions() as session, session.begin():
                await store.sign_checkpoint(session, key=self._key, origin=self._settings.origin, now=datetime.now(UTC).replace(microsecond=0))
        except store.TreeDamaged as exc:
            log.error("not signing a checkpoint: %s", exc)

    async def expire_once(self) -> int:
        async with self._rt.sessions() as session, session.begin():
            erased = await store.expire(session, now=datetime.now(UTC), years=self._settings.retention_years)
        if erased:
            log.info("erased the contents of %s expired entries (hashes kept)", erased)
        return erased

    async def run_forever(self) -> None:
        while True:
            try:
                async with self._rt.sessions() as session, session.begin():
                    appended = await store.append_missing(session)
                    marked = await store.mark_earlier_erasures(session, now=datetime.now(UTC), years=self._settings.retention_years)
                if appended:
                    log.info("appended %s earlier records to the tree", appended)
                if marked:
                    log.info("marked %s leaves erased earlier with an erasure leaf", marked)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("appending earlier records failed; retrying")
                await asyncio.sleep(1.0)
        expired_at = 0.0
        while True:
            try:
                await self.checkpoint_once()
                if time.monotonic() - expired_at > self._settings.expiry_check_seconds:
                    await self.expire_once()
                    expired_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("log keeping failed; retrying")
            await asyncio.sleep(self._settings.checkpoint_seconds)


def resident_of(token: VerifiedToken) -> str:
    if token.claims.get("scope") != "resident":
        raise ProblemError(403, "not-a-resident-credential", "This token is not a resident credential")
    return token.subject


def may_report_incidents(party: str) -> bool:
    return party == "national" or party.startswith(("pref-", "agency-"))


def build_app(settings: ServiceSettings) -> FastAPI:
    rt = Runtime(settings)
    log_settings = LogSettings()
    keeper = LogKeeper(rt, log_settings)
    consumer = StoredOffsetConsumer(
        bootstrap=settings.kafka_bootstrap, topic=topics.PROVISIONS, sessions=rt.sessions, offset_model=ConsumerOffset,
        dead_letter_model=DeadLetter, gate=rt.record_gate(), receipt_model=MessageReceipt, handler=store_record, batch_handler=store_records, producer=rt.producer, name=rt.party,
    )
    app = FastAPI(
        title="提供記録 (provision log)",
        version="1.1.0",
        description=(
            "Every provision of a resident's identity information in a verifiable Merkle-tree log (RFC 9162 hashing, "
            "signed checkpoints), incidents, the resident's own view of them, and the resident portal (`/portal`)."
        ),
        lifespan=rt.background(consumer.run_forever, keeper.run_forever),
    )
    app.state.keeper = keeper
    install_problem_handlers(app, rt.refusal_recorder(Refusal))
    resident_token = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party.startswith("rrs-"),
                                     longer_lived={RESIDENT_CREDENTIAL_SCOPE: RESIDENT_CREDENTIAL_MAX_SECONDS})  # the credential from the counter
    operator_token = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=may_report_incidents)
    public_key_pem = rt.keys.key_for(rt.party)

    async def view_of(code: str, limit: int):
        async with rt.sessions() as session:
            return await store.resident_view(session, code, key=public_key_pem, origin=log_settings.origin, limit=limit, now=datetime.now(UTC))

    @app.get("/v1/me/provisions", response_model=ProvisionRecordList, tags=["resident"])
    async def my_provisions(token: Annotated[VerifiedToken, Depends(resident_token)], limit: Annotated[int, Query(ge=1, le=500)] = 100) -> ProvisionRecordList:
        """Who received my identity information, newest first (resident credential required).

        Only records that match their leaf in the log are served; the others are listed in `withheld`
        with the reason (altered, gone, or not provable under the signed checkpoint)."""
        code = resident_of(token)
        rows = await view_of(code, limit)
        return ProvisionRecordList(
            resident_code=code, records=[r.record for r in rows if r.record is not None],
            withheld=[WithheldRecord(record_id=r.record_id, leaf_index=r.leaf_index, status=r.status.value, problem=r.problem or "") for r in rows if r.record is None],
        )

    @app.get("/v1/me/log", response_model=ResidentProvisionList, tags=["resident"])
    async def my_log(token: Annotated[VerifiedToken, Depends(resident_token)], limit: Annotated[int, Query(ge=1, le=500)] = 100) -> ResidentProvisionList:
        """My leaves in the log, newest first: each with `verified` and `status`, the stored record only when it
        matches its leaf, what the leaf itself says, and the incidents whose leaves name it."""
        code = resident_of(token)
        return ResidentProvisionList(resident_code=code, records=await view_of(code, limit))

    @app.get("/v1/me/provisions/{record_id}/proof", response_model=InclusionProof, tags=["resident"])
    async def my_proof(record_id: UUID, token: Annotated[VerifiedToken, Depends(resident_token)]) -> InclusionProof:
        """The inclusion proof of one of my records, for `python -m services.provision_log.verify inclusion`."""
        return await proof_for(rt, resident_of(token), record_id)

    @app.get("/v1/log/checkpoint", response_class=PlainTextResponse, tags=["log"])
    async def checkpoint() -> PlainTextResponse:
        """The newest signed checkpoint (C2SP signed note: origin, tree size, root hash, Ed25519 signature)."""
        async with rt.sessions() as session:
            row = await store.latest_checkpoint(session)
        if row is None:
            raise ProblemError(503, "no-checkpoint-yet", "No checkpoint has been signed yet")
        return PlainTextResponse(row.note, media_type=TEXT)

    @app.get("/v1/log/checkpoints/{tree_size}", response_class=PlainTextResponse, tags=["log"])
    async def checkpoint_of(tree_size: Annotated[int, Path(ge=0, le=BIGINT_MAX)]) -> PlainTextResponse:
        """The signed checkpoint of this tree size, if one was signed."""
        async with rt.sessions() as session:
            row = await store.checkpoint_of_size(session, tree_size)
        if row is None:
            raise ProblemError(404, "no-such-checkpoint", "No checkpoint of this tree size")
        return PlainTextResponse(row.note, media_type=TEXT)

    @app.get("/v1/log/consistency", response_model=ConsistencyProof, tags=["log"])
    async def consistency(first: Annotated[int, Query(ge=0, le=BIGINT_MAX)], second: Annotated[int, Query(ge=0, le=BIGINT_MAX)]) -> ConsistencyProof:
        """RFC 9162 consistency proof between two tree sizes."""
        async with rt.sessions() as session:
            try:
                return await store.consistency(session, first, second)
            except store.NotFound as exc:
                raise ProblemError(400, "sizes-out-of-range", "No consistency proof between these sizes", str(exc)) from None

    @app.get("/v1/log/leaves", response_model=LogLeaves, tags=["log"])
    async def leaves(start: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> LogLeaves:
        """Leaves in order, for auditors who recompute the tree (`verify audit`). Expired entries keep only their hash."""
        async with rt.sessions() as session:
            return await store.leaves(session, start, limit)

    @app.get("/v1/log/proofs", response_model=InclusionPaths, tags=["log"])
    async def proofs(size: Annotated[int, Query(ge=1, le=BIGINT_MAX)], start: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> InclusionPaths:
        """The inclusion proof of every leaf in a range at a tree size, as the stored tree gives them: `verify audit`
        checks each against the signed root, so an altered node is found even where no resident looks."""
        async with rt.sessions() as session:
            try:
                return await store.range_inclusion_paths(session, size, start, limit)
            except store.NotFound as exc:
                raise ProblemError(400, "no-such-proof", "The log cannot give these proofs", str(exc)) from None

    @app.get("/v1/log/key", response_class=PlainTextResponse, tags=["log"])
    async def public_key() -> PlainTextResponse:
        """The log's Ed25519 public key (PEM); the same file as `<keys dir>/provision-log.pub`."""
        if public_key_pem is None:
            raise ProblemError(503, "no-public-key", "The log's public key is not published")
        pem = public_key_pem.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return PlainTextResponse(pem, media_type=TEXT)

    @app.post("/v1/incidents", response_model=IncidentRecorded, status_code=201, tags=["incidents"])
    async def record_incident(report: Annotated[IncidentReport, Body()], token: Annotated[VerifiedToken, Depends(operator_token)]) -> IncidentRecorded:
        """Record an incident (a wrong lookup, a wrong provision) against provisions; the residents concerned see it.

        Only a party to every provision named may record it: the provider that answered or the agency that asked.
        The incident is appended to the log as well.
        """
        try:
            async with rt.sessions() as session, session.begin():
                return await store.record_incident(
                    session, reporter=token.issuer, kind=report.kind, record_ids=[str(r) for r in report.record_ids],
                    explanation=report.explanation, now=datetime.now(UTC),
                )
        except store.NotFound as exc:
            raise ProblemError(404, "unknown-provision-record", "No such provision record", str(exc)) from None
        except domain.IncidentRefused as exc:
            raise ProblemError(403, exc.slug, "Not a party to the provision", exc.detail) from None

    app.include_router(portal_router(rt, log_settings, proof_for=proof_for))
    return app


async def proof_for(rt: Runtime, resident_code: str, record_id: UUID) -> InclusionProof:
    async with rt.sessions() as session:
        try:
            return await store.inclusion_bundle(session, resident_code=resident_code, record_id=str(record_id))
        except store.NotFound as exc:
            raise ProblemError(404, "no-such-record", "No such record of yours", str(exc)) from None
        except store.NotYetCheckpointed as exc:
            raise ProblemError(409, "not-yet-checkpointed", "The record is not in a signed checkpoint yet; try again in a few seconds", str(exc)) from None
