"""HTTP edge of the JPKI certification authority at the national server.

Public (no token): the CA certificate, the CRL, the OCSP responder and the
status of a serial — none of them says anything about a person. Internal
(signed network-node tokens): issuance, asked by the CS of the municipality
where the person is registered; verification of a signed filing, the only
way a serial resolves to a person; the assurance ledger.
"""


from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import ocsp
from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.identifiers import ResidentCode
from contracts.identity import IdentityChange
from contracts.jpki import AssuranceEvent, AssuranceState, CertificateIssuanceRequest, CertificateStatus, FilingVerification, IssuedCertificate, SignedFiling
from services.common.auth import bearer_verifier, is_network_node
from services.common.problems import ProblemError
from services.common.tokens import VerifiedToken
from services.national_server import jpki, jpki_store

CS_PREFIX = "cs-"
MAX_OCSP_REQUEST_BYTES = 16 * 1024
_SERIAL_PATTERN = r"^[1-9][0-9]{0,48}$"

#: HTTP status of each issuance refusal.
_ISSUANCE_STATUS = {"not-registered-here": 403, "person-not-active": 409, "change-in-flight": 409, "signing-certificate-under-15": 409, "public-key-reused": 409, "unsupported-public-key": 422}

Hook = Callable[[AsyncSession, list[IdentityChange]], Awaitable[None]]


def in_order(*hooks: Hook) -> Hook:
    """One ``on_applied`` hook of a tier that runs several, in order, in the same transaction."""

    async def run(session: AsyncSession, changes: list[IdentityChange]) -> None:
        for hook in hooks:
            await hook(session, changes)

    return run


class Jpki:
    """The CA of the national server: its key, its routes, and its hook on applied identity changes."""

    def __init__(self, rt):
        if rt.settings.jpki_ca_key is None:
            raise SystemExit("the national server needs JUKINET_JPKI_CA_KEY (the JPKI certification authority's private key)")
        self.rt = rt
        self.ca = jpki_store.CertificationAuthority(jpki_store.load_ca_key(rt.settings.jpki_ca_key), rt.sessions)

    async def on_applied(self, session: AsyncSession, changes: list[IdentityChange]) -> None:
        """Revoke, in the transaction that applied the changes, what they make untrue."""
        await jpki_store.revoke_on_changes(session, changes, datetime.now(UTC))

    def router(self) -> APIRouter:
        rt, ca = self.rt, self.ca
        router = APIRouter(tags=["jpki"])
        from_cs = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party.startswith(CS_PREFIX))
        from_network = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=is_network_node)

        # --- public: nothing here names a person ---------------------------------------------
        @router.get("/v1/jpki/ca", response_class=Response, responses={200: {"content": {"application/x-pem-file": {}}}})
        async def ca_certificate() -> Response:
            """The CA certificate (PEM): the trust anchor of every JPKI certificate."""
            return Response(jpki.pem(await ca.certificate()), media_type="application/x-pem-file")

        @router.get("/v1/jpki/crl", response_class=Response, responses={200: {"content": {"application/pkix-crl": {}}}})
        async def crl() -> Response:
            """The certificate revocation list (DER, signed by the CA), current at the time of the request."""
            certificate = await ca.certificate()
            now = datetime.now(UTC)
            async with rt.sessions() as session:
                revoked = await jpki_store.revoked_within_validity(session, now)
            return Response(jpki.build_crl(ca.key, certificate, revoked, now), media_type="application/pkix-crl", headers={"cache-control": "no-cache"})

        @router.post(
            "/v1/jpki/ocsp", response_class=Response,
            openapi_extra={"requestBody": {"required": True, "content": {"application/ocsp-request": {"schema": {"type": "string", "format": "binary"}}}}},
            responses={200: {"content": {"application/ocsp-response": {}}}},
        )
        async def ocsp_responder(request: Request) -> Response:
            """OCSP (RFC 6960): a DER request in, a DER response signed by the CA out."""
            body = await request.body()
            parsed = jpki.ocsp_request(body) if len(body) <= MAX_OCSP_REQUEST_BYTES else None
            certificate = await ca.certificate()
            try:
                ours = parsed is not None and jpki.asks_about_this_ca(parsed, certificate)
            except (UnsupportedAlgorithm, ValueError):  # a hash algorithm this responder does not support
                parsed, ours = None, False
            if parsed is None:
                answer = jpki.ocsp_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
            elif not ours:
                answer = jpki.ocsp_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
            else:
                async with rt.sessions() as session:
                    row = await jpki_store.certificate_row(session, parsed.serial_number)
                revoked = jpki.Revoked(parsed.serial_number, row.revoked_at, jpki.RevocationReason(row.revocation_reason)) if row is not None and row.status == jpki_store.REVOKED else None
                answer = jpki.build_ocsp_response(parsed, ca.key, certificate, revoked, row is not None, datetime.now(UTC))
            return Response(answer, media_type="application/ocsp-response")

        @router.get("/v1/jpki/certificates/{serial}/status", response_model=CertificateStatus)
        async def certificate_status(serial: Annotated[str, Path(pattern=_SERIAL_PATTERN)]) -> CertificateStatus:
            """What OCSP says about a serial, as JSON."""
            async with rt.sessions() as session:
                return jpki_store.status_view(serial, await jpki_store.certificate_row(session, int(serial)))

        # --- internal: the CS of the holder's municipality, network nodes ---------------------
        @router.post("/internal/v1/jpki/certificates", status_code=201, response_model=IssuedCertificate)
        async def issue(body: CertificateIssuanceRequest, token: Annotated[VerifiedToken, Depends(from_cs)]) -> IssuedCertificate:
            """Issue a certificate at the counter of the municipality where the person is registered (an in-person check)."""
            certificate = await ca.certificate()
            try:
                async with rt.sessions() as session, session.begin():
                    return await jpki_store.issue(
                        session, ca, certificate, body, municipality_code=token.issuer.removeprefix(CS_PREFIX), caller=token.issuer, now=datetime.now(UTC),
                    )
            except jpki.IssuanceRefused as exc:
                raise ProblemError(_ISSUANCE_STATUS[exc.slug], exc.slug, "The certificate cannot be issued", str(exc)) from None
            except IntegrityError:
                raise ProblemError(409, "public-key-reused", "The certificate cannot be issued", "a certificate was already issued for this public key") from None

        @router.post("/internal/v1/jpki/verify", response_model=FilingVerification)
        async def verify(filing: SignedFiling, token: Annotated[VerifiedToken, Depends(from_network)]) -> FilingVerification:
            """Verify a signed filing and, only then, resolve the certificate's serial to its holder (recorded)."""
            now = datetime.now(UTC)
            try:
                payload = jpki.decode_base64(filing.payload, "payload")
                signature = jpki.decode_base64(filing.signature, "signature")
                certificate = jpki.check_filing(filing.certificate_pem, payload, signature, await ca.certificate(), now)
                async with rt.sessions() as session, session.begin():
                    return await jpki_store.resolve(session, certificate, purpose=filing.purpose, caller=token.issuer, now=now)
            except jpki.FilingRefused as exc:
                raise ProblemError(exc.status, exc.slug, exc.title, exc.detail) from None

        @router.get("/internal/v1/assurance/{resident_code}", response_model=AssuranceState, dependencies=[Depends(from_network)])
        async def assurance(resident_code: ResidentCode) -> AssuranceState:
            """The person's identity-assurance ledger (R-ONL-3, R-ONL-4)."""
            async with rt.sessions() as session:
                if not await jpki_store.person_known(session, resident_code):
                    raise ProblemError(404, "not-found", "No such person")
                return await jpki_store.assurance_state(session, resident_code)

        @router.post("/internal/v1/assurance/{resident_code}/events", response_model=AssuranceState)
        async def assurance_event(resident_code: ResidentCode, event: AssuranceEvent, token: Annotated[VerifiedToken, Depends(from_network)]) -> AssuranceState:
            """Count an online procedure, or reset the count after an in-person identity check."""
            async with rt.sessions() as session, session.begin():
                if not await jpki_store.person_known(session, resident_code):
                    raise ProblemError(404, "not-found", "No such person")
                return await jpki_store.record_event(session, resident_code, event, recorded_by=token.issuer, now=datetime.now(UTC))

        return router
