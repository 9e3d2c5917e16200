"""JPKI at the counter: staff hand the public keys the card generated to the
national CA and record in-person identity checks. The RRS calls only its own
CS (R-NET-1); the CS forwards to the national server."""



from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from contracts.identifiers import ResidentCode
from contracts.identity import RegistrationStatus
from contracts.jpki import AssuranceState, CardPublicKeys, CertificateIssuanceRequest, CertificateKind, IssuedCertificate, IssuedCertificates
from services.common.peers import PeerProblem, call_peer
from services.common.problems import PROBLEM_MEDIA_TYPE, ProblemError
from services.municipal_rrs import service
from services.municipal_rrs.domain import Resident
from services.municipal_rrs.request_deps import StaffDep


def jpki_router(rt, municipality_code: str) -> APIRouter:
    cs_node, cs_party = f"cs_gateway.{municipality_code}", f"cs-{municipality_code}"
    router = APIRouter(prefix="/v1/residents", tags=["jpki"])

    async def call_cs(method: str, path: str, answer: type[BaseModel], body: BaseModel | None = None):
        return await call_peer(rt, cs_node, cs_party, method, path, answer, body, peer_name="municipality's CS", slug_prefix="cs")

    async def registered(resident_code: str, *, allowed: set[RegistrationStatus]) -> Resident:
        async with rt.sessions() as session:
            try:
                resident = await service.load(session, resident_code)
            except service.NotFound:
                raise ProblemError(404, "not-found", "No such record", f"no resident {resident_code} in this municipality") from None
        if resident.status not in allowed:
            raise ProblemError(409, "person-not-active", "The person is not registered here", f"{resident_code} is {resident.status.value}")
        return resident

    def passed_on(problem: PeerProblem) -> JSONResponse:
        return JSONResponse(problem.response.json(), status_code=problem.response.status_code, media_type=PROBLEM_MEDIA_TYPE)

    @router.post("/{resident_code}/jpki-certificates", status_code=201, response_model=IssuedCertificates)
    async def issue(resident_code: ResidentCode, keys: CardPublicKeys, _staff: StaffDep):
        """Issue the card's certificates (署名用 and/or 利用者証明用) over the public keys the card generated."""
        resident = await registered(resident_code, allowed={RegistrationStatus.active})
        wanted = [(CertificateKind.signing, keys.signing_public_key_pem), (CertificateKind.authentication, keys.authentication_public_key_pem)]
        issued = []
        try:
            for kind, pem in wanted:
                if pem is not None:
                    issued.append(await call_cs("POST", "/v1/rrs/jpki/certificates", IssuedCertificate, CertificateIssuanceRequest(resident_code=resident_code, kind=kind, public_key_pem=pem, known_version=resident.version)))
        except PeerProblem as problem:
            return passed_on(problem)
        return IssuedCertificates(resident_code=resident_code, certificates=issued)

    @router.post("/{resident_code}/identity-checks", response_model=AssuranceState)
    async def identity_check(resident_code: ResidentCode, _staff: StaffDep):
        """Record that the counter checked the person's identity face to face (resets the online count)."""
        await registered(resident_code, allowed=set(RegistrationStatus) - {RegistrationStatus.deceased, RegistrationStatus.removed})
        try:
            return await call_cs("POST", f"/v1/rrs/assurance/{resident_code}/in-person-checks", AssuranceState)
        except PeerProblem as problem:
            return passed_on(problem)

    @router.get("/{resident_code}/assurance", response_model=AssuranceState)
    async def assurance(resident_code: ResidentCode):
        """The person's identity-assurance ledger as the national server keeps it."""
        try:
            return await call_cs("GET", f"/v1/rrs/assurance/{resident_code}", AssuranceState)
        except PeerProblem as problem:
            return passed_on(problem)

    return router
