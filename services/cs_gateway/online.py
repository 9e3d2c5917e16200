"""Online notifications at the CS (R-ONL-1…5): the resident-facing door of one municipality.

A filing is authenticated by its signature alone: the national CA verifies
it and resolves the certificate serial to the signer, inside this procedure
only. The CS then applies the municipality's rules (window, identity
assurance, accepted residence confirmations, jurisdiction) and hands the
filing to its register as a notice; the register's outcome comes back in its
next batch. Every refusal is a problem document, recorded by the CS.
Completed filings count as online procedures in the national assurance
ledger; that count is delivered from this CS's table until the national
server has taken it, so it is not lost when the national server is away.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, date, datetime
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select

from contracts.jpki import (
    AssuranceEvent, AssuranceEventKind, AssuranceState, CertificateIssuanceRequest, CertificateKind, FilingVerification, IssuedCertificate, SignedFiling,
)
from contracts.online import (
    OnlineCertificateRenewal, OnlineConfirmationCode, OnlineConfirmationNotice, OnlineFilingContent, OnlineFilingNotice, OnlineFilingOutcome, OnlineFilingReceipt,
    OnlineFilingState, OnlineMoveIn, OnlineSubmission,
)
from services.common.peers import PeerProblem, call_peer
from services.common.problems import ProblemError
from services.common.topology import MunicipalitySpec
from services.cs_gateway.jpki_routes import issue_certificate
from services.cs_gateway.models import TABLES, MoveCertificateRow, OnlineFilingRow
from services.cs_gateway.online_rules import FRESHNESS, assurance_refusal, confirmation_refusal, window_refusal

log = logging.getLogger(__name__)
_content = TypeAdapter(OnlineFilingContent)
NATIONAL_NODE = "national_server.national"


def _receipt(row: OnlineFilingRow) -> OnlineFilingReceipt:
    return OnlineFilingReceipt(filing_id=row.filing_id, kind=row.kind, state=OnlineFilingState(row.state), reason=row.reason, next_step=row.next_step, updated_at=row.updated_at)


class CsOnline:
    def __init__(self, rt, *, municipality: MunicipalitySpec, moves):
        self.rt = rt
        self.municipality = municipality
        self.moves = moves  # keeps notices for the register

    async def _national(self, method: str, path: str, answer, body=None):
        """Call the national server; its problem documents become this CS's (recorded) refusals."""
        try:
            return await call_peer(self.rt, NATIONAL_NODE, "national", method, path, answer, body,
                                   peer_name="national server", slug_prefix="national", unavailable_status=503)
        except PeerProblem as problem:
            raise problem.as_own() from None

    async def submit(self, submission: OnlineSubmission) -> OnlineFilingReceipt:
        try:
            content = _content.validate_json(base64.b64decode(submission.payload))
        except (ValidationError, ValueError) as exc:
            raise ProblemError(422, "invalid-filing", "The signed content is not a filing this municipality accepts", str(exc)[:1000]) from None
        purpose = content.kind.removesuffix("/v1")
        verification: FilingVerification = await self._national(
            "POST", "/internal/v1/jpki/verify", FilingVerification,
            SignedFiling(certificate_pem=submission.certificate_pem, payload=submission.payload, signature=submission.signature, purpose=purpose),
        )
        if verification.kind is not CertificateKind.signing:
            raise ProblemError(403, "signing-certificate-required", "Filings are signed with the signing certificate (署名用電子証明書)")
        now = datetime.now(UTC)
        policy = self.municipality.online
        for refusal in (window_refusal(content, today=date.today(), now=now), confirmation_refusal(content, policy)):
            if refusal:
                raise ProblemError(422, "outside-online-rules", "The filing cannot be accepted online", refusal)
        if refusal := assurance_refusal(verification.assurance, policy, now=now):
            raise ProblemError(403, "in-person-check-required", "An in-person identity check is needed", refusal)
        code = verification.resident_code
        async with self.rt.sessions() as session, session.begin():
            # a replay first: once the first copy is processed, the person may no longer be registered here,
            # and the answer must still say that this very filing was received already
            if await session.get(OnlineFilingRow, content.nonce) is not None:
                raise ProblemError(409, "replayed-filing", "This filing was already received", f"filing {content.nonce}")
            await self._check_jurisdiction(session, code, content)
            row = OnlineFilingRow(
                filing_id=content.nonce, kind=content.kind, resident_code=code, serial=verification.serial, state=OnlineFilingState.received.value,
                next_step="the municipality is processing the filing", updated_at=now, assurance_recorded=False,
            )
            session.add(row)
            await self.moves.take(session, OnlineFilingNotice(filing_id=content.nonce, municipality_code=self.municipality.code, resident_code=code, serial=verification.serial, content=content))
        return _receipt(row)

    async def _check_jurisdiction(self, session, code: str, content) -> None:
        """A 転入届 goes to where the 転出証明書情報 went; the others to where the person is registered."""
        if isinstance(content, OnlineMoveIn):
            pending = (await session.execute(select(MoveCertificateRow.certificate_id).where(
                MoveCertificateRow.resident_code == code, MoveCertificateRow.status == "pending").limit(1))).scalar_one_or_none()
            if pending is None:
                raise ProblemError(409, "no-move-out-certificate", "No 転出証明書情報 for you has reached this municipality",
                                   "file the 転出届 at your current municipality first (online or at the counter)")
            return
        status = (await session.execute(select(TABLES.current.status).where(
            TABLES.current.resident_code == code, TABLES.current.municipality_code == self.municipality.code))).scalar_one_or_none()
        if status != "active":
            raise ProblemError(409, "not-registered-here", "You are not registered in this municipality", "file with the municipality where you are registered")

    async def renew_signing_certificate(self, submission: OnlineSubmission) -> IssuedCertificate:
        """A new signing certificate, asked with the authentication certificate after an address change."""
        try:
            renewal = OnlineCertificateRenewal.model_validate_json(base64.b64decode(submission.payload))
        except (ValidationError, ValueError) as exc:
            raise ProblemError(422, "invalid-filing", "The signed content is not a certificate renewal", str(exc)[:1000]) from None
        verification: FilingVerification = await self._national(
            "POST", "/internal/v1/jpki/verify", FilingVerification,
            SignedFiling(certificate_pem=submission.certificate_pem, payload=submission.payload, signature=submission.signature, purpose="online-certificate-renewal"),
        )
        if verification.kind is not CertificateKind.authentication:
            raise ProblemError(403, "authentication-certificate-required", "A renewal is signed with the authentication certificate (利用者証明用電子証明書)")
        now = datetime.now(UTC)
        if abs(now - renewal.filed_at) > FRESHNESS:
            raise ProblemError(422, "outside-online-rules", "The filing cannot be accepted online", "the renewal was signed more than 10 minutes ago; sign it again")
        if refusal := assurance_refusal(verification.assurance, self.municipality.online, now=now):
            raise ProblemError(403, "in-person-check-required", "An in-person identity check is needed", refusal)
        code = verification.resident_code
        async with self.rt.sessions() as session:
            await self._check_jurisdiction(session, code, renewal)
            if await session.get(OnlineFilingRow, renewal.nonce) is not None:
                raise ProblemError(409, "replayed-filing", "This filing was already received", f"filing {renewal.nonce}")
        try:
            issued = await issue_certificate(
                self.rt, CertificateIssuanceRequest(resident_code=code, kind=CertificateKind.signing, public_key_pem=renewal.public_key_pem, in_person=False))
        except PeerProblem as problem:
            raise problem.as_own() from None
        async with self.rt.sessions() as session, session.begin():
            session.add(OnlineFilingRow(
                filing_id=renewal.nonce, kind=renewal.kind, resident_code=code, serial=verification.serial, state=OnlineFilingState.completed.value,
                next_step=None, updated_at=now, assurance_recorded=False,
            ))
        return issued

    async def receipt(self, filing_id: UUID) -> OnlineFilingReceipt:
        async with self.rt.sessions() as session:
            row = await session.get(OnlineFilingRow, filing_id)
        if row is None:
            raise ProblemError(404, "not-found", "No such filing")
        return _receipt(row)

    async def confirm(self, filing_id: UUID, body: OnlineConfirmationCode) -> OnlineFilingReceipt:
        import uuid

        async with self.rt.sessions() as session, session.begin():
            row = await session.get(OnlineFilingRow, filing_id, with_for_update=True)
            if row is None:
                raise ProblemError(404, "not-found", "No such filing")
            if row.state != OnlineFilingState.awaiting_confirmation.value:
                raise ProblemError(409, "not-awaiting-confirmation", "The filing is not waiting for a confirmation code", f"it is {row.state}")
            await self.moves.take(session, OnlineConfirmationNotice(
                filing_id=filing_id, municipality_code=self.municipality.code, resident_code=row.resident_code, attempt_id=uuid.uuid4(), code=body.code))
            row.next_step = "the municipality is checking the code"
            return _receipt(row)

    async def take_outcome(self, session, outcome: OnlineFilingOutcome) -> bool:
        """The register's decision on a filing (in the register's batch transaction)."""
        row = await session.get(OnlineFilingRow, outcome.filing_id, with_for_update=True)
        if row is None:
            return False
        row.state, row.reason, row.next_step, row.updated_at = outcome.state.value, outcome.reason, outcome.next_step, outcome.decided_at
        return True

    async def record_assurance_once(self) -> int:
        """Count completed filings as online procedures in the national ledger (retried until taken)."""
        async with self.rt.sessions() as session:
            rows = (await session.execute(select(OnlineFilingRow).where(
                OnlineFilingRow.state == OnlineFilingState.completed.value, OnlineFilingRow.assurance_recorded.is_(False)).limit(50))).scalars().all()
        done = 0
        for row in rows:
            try:
                await self._national("POST", f"/internal/v1/assurance/{row.resident_code}/events", AssuranceState,
                                     AssuranceEvent(kind=AssuranceEventKind.online_procedure, purpose=row.kind.removesuffix("/v1")))
            except ProblemError as exc:
                log.warning("assurance event for filing %s not taken: %s", row.filing_id, exc.detail)
                continue
            async with self.rt.sessions() as session, session.begin():
                stored = await session.get(OnlineFilingRow, row.filing_id, with_for_update=True)
                stored.assurance_recorded = True
            done += 1
        return done

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/v1/online", tags=["online"])

        @router.post("/filings", status_code=202, response_model=OnlineFilingReceipt)
        async def submit(submission: OnlineSubmission, request: Request) -> OnlineFilingReceipt:
            """File a 転出届, 転入届 or 転居届 online, signed with the signing certificate on your card."""
            request.state.caller = "resident-online"
            return await self.submit(submission)

        @router.post("/certificate-renewals", status_code=201, response_model=IssuedCertificate)
        async def renew(submission: OnlineSubmission, request: Request) -> IssuedCertificate:
            """After an address change: a new signing certificate over a key made on the card, signed with the authentication certificate."""
            request.state.caller = "resident-online"
            return await self.renew_signing_certificate(submission)

        @router.get("/filings/{filing_id}", response_model=OnlineFilingReceipt)
        async def receipt(filing_id: UUID) -> OnlineFilingReceipt:
            """Where the filing stands (the filing id is the signed nonce, known only to the filer)."""
            return await self.receipt(filing_id)

        @router.post("/filings/{filing_id}/confirmation", status_code=202, response_model=OnlineFilingReceipt)
        async def confirm(filing_id: UUID, body: OnlineConfirmationCode) -> OnlineFilingReceipt:
            """Enter the one-time code mailed to the new address (residence confirmation)."""
            return await self.confirm(filing_id, body)

        return router
