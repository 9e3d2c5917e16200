"""Household provision at the national server: it does not hold households, so it
forwards the authorised request to the CS of the person's municipality, and
records the provision itself too."""

from types import SimpleNamespace
from typing import Annotated

from fastapi import APIRouter, Depends
from opentelemetry import trace

from contracts.household import HouseholdAnswer, HouseholdQuery, HouseholdRequest, ProvidedHousehold, ProvidedHouseholdMember
from contracts.provision import ProvidedName
from contracts.register import Relationship
from services.common.auth import bearer_verifier
from services.common.households import household_grant
from services.common.problems import ProblemError
from services.common.provision import AGENCY_PARTY_PREFIX, ProvisionRefused, record_provisions, subject_for
from services.common.tokens import VerifiedToken
from services.national_server.models import Identity, Outbox


def household_router(rt, *, pseudonymizer, relay) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["provision"])
    verify = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party.startswith(AGENCY_PARTY_PREFIX))
    topology = rt.settings.topology_model

    @router.post("/households/query", response_model=ProvidedHousehold)
    async def household_query(query: HouseholdQuery, token: Annotated[VerifiedToken, Depends(verify)]) -> ProvidedHousehold:
        """The household of a person (members, head, 続柄), for a household-based affair only. Recorded by the national server and the CS."""
        agency_id = token.issuer.removeprefix(AGENCY_PARTY_PREFIX)
        try:
            grant = household_grant(topology, agency_id=agency_id, affair_id=query.affair)
            if query.resident_code is not None and not grant.affair.requires_resident_code:
                raise ProvisionRefused("resident-code-not-authorised", f"the affair {query.affair} works with pseudonyms")
        except ProvisionRefused as exc:
            raise ProblemError(403, exc.slug, "Not authorised for household information", exc.detail) from None
        resident_code = query.resident_code or pseudonymizer.resolve(agency_id, query.pseudonym)
        async with rt.sessions() as session:
            person = await session.get(Identity, resident_code) if resident_code else None
        if person is None or person.status != "active":
            raise ProblemError(404, "not-found", "No such person")
        cs_node, cs_party = f"cs_gateway.{person.municipality_code}", f"cs-{person.municipality_code}"
        request = HouseholdRequest(resident_code=person.resident_code, agency=agency_id, agency_name=grant.agency.name, affair=grant.affair.id, reason=query.reason)
        response = await rt.http.post(
            f"{rt.settings.peer(cs_node)}/internal/v1/household-queries", content=request.model_dump_json(),
            headers={"content-type": "application/json", "authorization": f"Bearer {rt.token_for(cs_party)}"},
        )
        if response.status_code == 404:
            raise ProblemError(404, "not-found", "The municipality knows no household for this person")
        if response.status_code != 200:
            raise ProblemError(502, "municipality-unavailable", "The municipality's CS did not answer", f"{cs_node} answered {response.status_code}")
        answer = HouseholdAnswer.model_validate_json(response.content)
        trace_id = f"{trace.get_current_span().get_span_context().trace_id:032x}"
        async with rt.sessions() as session, session.begin():
            record_provisions(
                session, Outbox, provider=rt.party, grant=grant, reason=query.reason, query_type="Household", trace_id=trace_id,
                rows=[SimpleNamespace(resident_code=m.resident_code, municipality_code=answer.municipality_code) for m in answer.members],
            )
        relay.wakeup.set()
        members = []
        for m in answer.members:
            code, pseudonym = subject_for(grant, m.resident_code, pseudonymizer)
            members.append(ProvidedHouseholdMember(resident_code=code, pseudonym=pseudonym, name=ProvidedName(family_name=m.family_name, given_name=m.given_name), relationship=m.relationship, head=m.relationship is Relationship.head))
        return ProvidedHousehold(affair=grant.affair.id, members=members)

    return router
