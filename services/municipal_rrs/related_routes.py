"""HTTP API of the related municipal affairs (R-REL-1): 住登外者 and 印鑑登録, beside the register.

No ``from __future__ import annotations`` here: FastAPI resolves the local
``Annotated`` dependency aliases from the function signatures.
"""

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request

from contracts.register import ResidentRecord
from contracts.related import EndSeal, LinkNonResident, NonResident, NonResidentStatus, RegisterNonResident, RegisterSeal, SealRegistration, SealStatus
from services.common.params import PositiveBigIntPath
from services.common.problems import ProblemError
from services.common.runtime import Runtime
from services.municipal_rrs import access, related
from services.municipal_rrs.domain import RegistryRuleViolation
from services.municipal_rrs.request_deps import StaffDep, transaction_dependency

def related_router(rt: Runtime, municipality_code: str) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["related affairs"])

    SessionDep = transaction_dependency(rt.sessions)

    def rule(exc: RegistryRuleViolation) -> ProblemError:
        return ProblemError(409, "registry-rule", "The change breaks a registry rule", str(exc))

    def not_found(exc: related.NotFound, what: str) -> ProblemError:
        return ProblemError(404, "not-found", f"No such {what}", f"no {what} {exc} in this municipality")

    @router.post("/non-residents", status_code=201, response_model=NonResident)
    async def register_non_resident(body: RegisterNonResident, session: SessionDep, staff: StaffDep) -> NonResident:
        """住登外者の登録: a person the municipality deals with who lives elsewhere (e.g. a property-tax payer)."""
        try:
            return await related.register_non_resident(session, body, municipality_code=municipality_code, staff=staff)
        except RegistryRuleViolation as exc:
            raise rule(exc) from None

    @router.get("/non-residents", response_model=list[NonResident])
    async def search_non_residents(
        session: SessionDep,
        name: Annotated[str | None, Query(max_length=60)] = None,
        kana: Annotated[str | None, Query(max_length=120)] = None,
        birth_date: date | None = None,
        status: NonResidentStatus | None = None,
        linked_resident_code: Annotated[str | None, Query(pattern=r"^[0-9]{11}$")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 100,
    ) -> list[NonResident]:
        """住登外者 by name or reading (prefix), birth date, status, or the resident they were linked to."""
        return await related.search_non_residents(session, name=name, kana=kana, birth_date=birth_date, status=status, linked_resident_code=linked_resident_code, limit=limit)

    @router.get("/non-residents/{non_resident_id}", response_model=NonResident)
    async def get_non_resident(non_resident_id: uuid.UUID, session: SessionDep) -> NonResident:
        """One 住登外者."""
        try:
            return await related.get_non_resident(session, non_resident_id)
        except related.NotFound as exc:
            raise not_found(exc, "non-resident") from None

    @router.get("/non-residents/{non_resident_id}/link-candidates", response_model=list[ResidentRecord])
    async def link_candidates(non_resident_id: uuid.UUID, session: SessionDep, request: Request) -> list[ResidentRecord]:
        """Residents with the same birth date and name or reading: candidates for staff to check, never linked by name alone."""
        try:
            candidates = await related.link_candidates(session, non_resident_id)
        except related.NotFound as exc:
            raise not_found(exc, "non-resident") from None
        await access.record_reads(request, [r.resident_code for r in candidates])  # each candidate's record was shown
        return candidates

    @router.post("/non-residents/{non_resident_id}/link", response_model=NonResident)
    async def link(non_resident_id: uuid.UUID, body: LinkNonResident, session: SessionDep, staff: StaffDep) -> NonResident:
        """Link a 住登外者 to the 住民票 of the same person (after staff checked identity)."""
        try:
            return await related.link_non_resident(session, non_resident_id, body.resident_code, staff=staff)
        except related.NotFound as exc:
            raise not_found(exc, "non-resident or resident") from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None

    @router.post("/seal-registrations", status_code=201, response_model=SealRegistration)
    async def register_seal(body: RegisterSeal, session: SessionDep, staff: StaffDep) -> SealRegistration:
        """印鑑登録: an active resident aged 15 or more, one registered seal at a time."""
        try:
            return await related.register_seal(session, body, staff=staff, today=date.today())
        except related.NotFound as exc:
            raise not_found(exc, "resident") from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None

    @router.get("/seal-registrations", response_model=list[SealRegistration])
    async def list_seals(
        session: SessionDep,
        holder_resident_code: Annotated[str | None, Query(pattern=r"^[0-9]{11}$")] = None,
        status: SealStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
    ) -> list[SealRegistration]:
        """Seal registrations, newest first; by holder or status."""
        return await related.list_seals(session, holder_resident_code=holder_resident_code, status=status, limit=limit)

    @router.get("/seal-registrations/{registration_number}", response_model=SealRegistration)
    async def get_seal(registration_number: PositiveBigIntPath, session: SessionDep) -> SealRegistration:
        """One seal registration, ended ones included (with why and when they ended)."""
        try:
            return await related.get_seal(session, registration_number)
        except related.NotFound as exc:
            raise not_found(exc, "seal registration") from None

    @router.post("/seal-registrations/{registration_number}/abolition", response_model=SealRegistration)
    async def end_seal(registration_number: PositiveBigIntPath, body: EndSeal, session: SessionDep, staff: StaffDep) -> SealRegistration:
        """印鑑登録廃止 at the holder's request or after a loss (moves, deaths and removals end it by themselves)."""
        try:
            return await related.end_seal(session, registration_number, body, staff=staff, today=date.today())
        except related.NotFound as exc:
            raise not_found(exc, "seal registration") from None
        except RegistryRuleViolation as exc:
            raise rule(exc) from None

    return router
