"""JPKI and the assurance ledger at the CS: the municipality's RRS asks, the CS
forwards to the national server with its own token (the RRS never talks to the
network itself, R-NET-1). Answers are validated against the contracts on the
way back; the national server's problem documents are passed through as they are."""


import asyncio
import time

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select

from contracts.identifiers import ResidentCode
from contracts.jpki import AssuranceEvent, AssuranceEventKind, AssuranceState, CertificateIssuanceRequest, FilingVerification, IssuedCertificate, SignedFiling
from services.common.auth import bearer_verifier
from services.common.peers import PeerProblem, call_peer
from services.common.problems import PROBLEM_MEDIA_TYPE, ProblemError
from services.cs_gateway.models import TABLES

NATIONAL_NODE, NATIONAL_PARTY = "national_server.national", "national"
#: how long a certificate request waits for the person's latest change to reach the national server;
#: shorter than the register's own wait for the CS (10 s), so the register hears the outcome
CHANGE_IN_FLIGHT_WAIT_SECONDS = 7.0


async def issue_certificate(rt, request: CertificateIssuanceRequest) -> IssuedCertificate:
    """Ask the national CA for a certificate, stating the newest version of the person known here
    (this CS's copy, or the register's when it asks and the CS has not taken it yet).

    Right after a change (a 転居, then a renewal of the signing certificate)
    the national server may not hold that version yet; a certificate issued
    from its older items would be revoked as soon as the change arrives. The
    CA says ``change-in-flight`` and this waits for the change, within a bound.
    A refusal comes back as :class:`PeerProblem`.
    """
    async with rt.sessions() as session:
        version = (await session.execute(select(TABLES.current.version).where(TABLES.current.resident_code == request.resident_code))).scalar_one_or_none()
    request = request.model_copy(update={"known_version": max(filter(None, (version, request.known_version)), default=None)})
    deadline = time.monotonic() + CHANGE_IN_FLIGHT_WAIT_SECONDS
    while True:
        try:
            return await call_peer(rt, NATIONAL_NODE, NATIONAL_PARTY, "POST", "/internal/v1/jpki/certificates", IssuedCertificate, request,
                                   peer_name="national server", slug_prefix="national")
        except PeerProblem as problem:
            if problem.slug != "change-in-flight" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


def jpki_router(rt, municipality_code: str) -> APIRouter:
    from_own_rrs = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party == f"rrs-{municipality_code}")
    router = APIRouter(prefix="/v1/rrs", tags=["jpki"], dependencies=[Depends(from_own_rrs)])

    async def national(method: str, path: str, answer: type[BaseModel], body: BaseModel | None = None):
        """Call the national server; a validated answer, or its problem document passed through."""
        try:
            return await call_peer(rt, NATIONAL_NODE, NATIONAL_PARTY, method, path, answer, body, peer_name="national server", slug_prefix="national")
        except PeerProblem as problem:
            return JSONResponse(problem.document, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE)

    @router.post("/jpki/certificates", status_code=201, response_model=IssuedCertificate)
    async def issue(body: CertificateIssuanceRequest):
        """Ask the national CA for a certificate for a person registered here (issued at this municipality's counter)."""
        async with rt.sessions() as session:
            held = (await session.execute(select(TABLES.current.status).where(TABLES.current.resident_code == body.resident_code))).scalar_one_or_none()
        if held != "active":  # the CS's own copy first: layered defence, the national server checks again
            raise ProblemError(403, "not-registered-here", "The person is not registered in this municipality", f"the CS holds no active registration of {body.resident_code}")
        try:
            return await issue_certificate(rt, body)
        except PeerProblem as problem:
            return JSONResponse(problem.document, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE)

    @router.post("/jpki/verifications", response_model=FilingVerification)
    async def verify(filing: SignedFiling):
        """Verify a filing signed on the resident's card; the answer names the signer."""
        return await national("POST", "/internal/v1/jpki/verify", FilingVerification, filing)

    @router.get("/assurance/{resident_code}", response_model=AssuranceState)
    async def assurance(resident_code: ResidentCode):
        """The person's identity-assurance ledger, for the municipality's limits."""
        return await national("GET", f"/internal/v1/assurance/{resident_code}", AssuranceState)

    @router.post("/assurance/{resident_code}/events", response_model=AssuranceState)
    async def assurance_event(resident_code: ResidentCode, event: AssuranceEvent):
        """Count an online procedure, or an in-person check."""
        return await national("POST", f"/internal/v1/assurance/{resident_code}/events", AssuranceState, event)

    @router.post("/assurance/{resident_code}/in-person-checks", response_model=AssuranceState)
    async def in_person_check(resident_code: ResidentCode):
        """The counter checked the person's identity face to face: the online count starts again."""
        return await national("POST", f"/internal/v1/assurance/{resident_code}/events", AssuranceState, AssuranceEvent(kind=AssuranceEventKind.in_person_check, purpose="counter-check"))

    return router
