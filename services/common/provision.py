"""Provision of 本人確認情報 to agencies: authorisation, item selection, and
the provision record written before any data leaves.

Used by the national server (national affairs) and the prefecture servers
(prefectural affairs of their prefecture).
"""


import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from opentelemetry import trace
from sqlalchemy import exists, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import topics
from contracts.affairs import AFFAIRS, CRITERION_ITEMS, Affair, Criterion, Item, Level, criteria_allowed
from contracts.identity import IdentityChange
from contracts.provision import (
    ByBasicItems, ByIndividualNumber, ByPseudonym, ByResidentCode, ProvidedAddress, ProvidedChange, ProvidedKana, ProvidedName,
    ProvidedPerson, ProvisionRecord, criteria_of,
)
from services.common.dv_rules import provided_items
from services.common.metrics import count_provisions
from services.common.outbox import enqueue
from services.common.topology import AgencySpec, Topology
from services.common.telemetry import context_from_traceparent


class ProvisionRefused(Exception):
    def __init__(self, slug: str, detail: str):
        super().__init__(detail)
        self.slug = slug
        self.detail = detail


class TooManyResults(Exception):
    pass


@dataclass(frozen=True)
class Grant:
    agency: AgencySpec
    affair: Affair
    items: tuple[Item, ...]


def authorise(topology: Topology, *, agency_id: str, affair_id: str, fields: list[Item] | None, level: Level, prefecture: str | None, query=None) -> Grant:
    """The items this agency may receive for this affair from this provider, or a refusal; with a
    ``query``, also whether its criteria are on items the affair may receive."""
    agency = topology.agency(agency_id)
    if agency is None:
        raise ProvisionRefused("unknown-agency", f"{agency_id} is not an agency of this network")
    affair = AFFAIRS.get(affair_id)
    if affair is None:
        raise ProvisionRefused("unknown-affair", f"{affair_id} is not an affair in the catalogue")
    if affair_id not in agency.affairs:
        raise ProvisionRefused("affair-not-authorised", f"{agency.id} is not authorised for the affair {affair_id}")
    if affair.level is not level or (level is Level.prefectural and agency.prefecture != prefecture):
        raise ProvisionRefused("wrong-provider", f"the affair {affair_id} is not served here; {_where_served(topology, affair, agency)}")
    if fields:
        outside = [f.value for f in fields if f not in affair.items]
        if outside:
            raise ProvisionRefused("fields-not-authorised", f"the affair {affair_id} does not cover: {', '.join(outside)}")
        items = tuple(i for i in affair.items if i in fields)
    else:
        items = affair.items
    if query is not None:
        check_criteria(affair, query)
    return Grant(agency=agency, affair=affair, items=items)


def _where_served(topology: Topology, affair: Affair, agency: AgencySpec) -> str:
    """Tells a misdirected agency which provider to call, so the refusal can be acted on."""
    if affair.level is Level.prefectural and agency.prefecture is not None:
        node = topology.prefecture_node(agency.prefecture)
        return f"prefectural affairs of {agency.prefecture} are served by {node.id} (token audience {node.party!r}) at POST /v1/persons/query"
    return "national affairs are served by national_server.national (token audience 'national')"


def items_for(grant: Grant, *, protected: bool) -> tuple[Item, ...]:
    """The grant's items for one person: a DV-protected person's address only for affairs that require it (R-DV-1)."""
    return provided_items(grant.items, requires_address=grant.affair.requires_address, protected=protected)


def project(row, items: tuple[Item, ...], *, pseudonym: str | None = None, protected: bool = False) -> ProvidedPerson:
    """Only the granted items, from a stored identity row (pure)."""
    return project_change(IdentityChange.model_validate_json(row.payload), items, pseudonym=pseudonym, protected=protected)


def project_change(change: IdentityChange, items: tuple[Item, ...], *, pseudonym: str | None = None, protected: bool = False) -> ProvidedPerson:
    """Only the granted items of one version of a person (pure); ``protected`` is always delivered (use :func:`items_for`)."""
    ident = change.identity
    values: dict = {"pseudonym": pseudonym} if pseudonym else {}
    if protected:
        values["protected"] = True
    if Item.resident_code in items:
        values["resident_code"] = change.resident_code
    if Item.individual_number in items:
        values["individual_number"] = ident.individual_number
    if Item.name in items:
        values["name"] = ProvidedName(family_name=ident.name.family_name, given_name=ident.name.given_name)
    if Item.name_kana in items:
        values["name_kana"] = ProvidedKana(family_name_kana=ident.name.family_name_kana, given_name_kana=ident.name.given_name_kana)
    if Item.former_surname in items:
        values["former_surname"] = ident.former_surname
    if Item.alias in items:
        values["alias"] = ident.alias
    if Item.birth_date in items:
        values["birth_date"] = ident.birth_date
    if Item.sex in items:
        values["sex"] = ident.sex
    if Item.address in items:
        values["address"] = ProvidedAddress(municipality_code=ident.address.municipality_code, text=ident.address.text)
    if Item.status in items:
        values["status"] = change.status
    if Item.change in items:
        values["change"] = ProvidedChange(reason=change.reason, change_date=change.change_date)
    return ProvidedPerson(**values)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def refused_criteria(affair: Affair) -> tuple[str, ...]:
    """The criteria (query members) a query for this affair may not use: those on items it does not receive."""
    allowed = criteria_allowed(affair)
    return tuple(c.value for c in Criterion if c not in allowed)


def check_criteria(affair: Affair, query, *, refused: tuple[str, ...] | None = None) -> None:
    """A query selects persons only by items its affair may receive (``criteria_allowed``): a criterion
    is an oracle on its item, so searching by it is receiving it. Refused before anything is read, so the
    refusal is the same whoever exists. ``refused``: :func:`refused_criteria` of the affair, when a bulk
    job asks it once for many rows."""
    outside = [name for name in (refused_criteria(affair) if refused is None else refused) if getattr(query, name, None) is not None]
    if outside:
        raise ProvisionRefused("criterion-not-authorised", f"the affair {affair.id} does not receive the items these criteria select by: {', '.join(outside)}")


def criteria_blind_to_protected(affair: Affair) -> frozenset[Criterion]:
    """Criteria on the items this affair receives of others but not of a person under a DV support
    measure (the address, unless the affair requires it, R-DV-1). They never discriminate a protected
    person: see :func:`find`."""
    withheld = set(affair.items) - set(provided_items(affair.items, requires_address=affair.requires_address, protected=True))
    return frozenset(c for c, item in CRITERION_ITEMS.items() if item in withheld)


class Found(NamedTuple):
    rows: list  # identity rows, ordered by resident code
    protected: set[str]  # the resident codes among them a DV support measure protects, read in the same statement


async def find(session: AsyncSession, identity_model, query, *, affair: Affair, marker_model, municipalities: set[str] | None,
               resolve_pseudonym: Callable[[str], str | None] | None = None) -> Found:
    """Persons matching the query, with their protection; raises TooManyResults past the query's limit.

    The ONE place where a criterion on a withheld item is kept from discriminating a protected person
    (docs/dv.md, "Searching"): such a criterion is not applied to them at all. A protected person is
    matched, counted against the limit and ordered exactly as if the criterion had not been given, so the
    answer is the same whether the guess about their address is right or wrong. Protection is read in the
    statement that matches, so the match and the projection cannot disagree about it.
    """
    check_criteria(affair, query)
    shielded = (exists().where(marker_model.resident_code == identity_model.resident_code, marker_model.protected.is_(True))
                if marker_model is not None else false())
    stmt = select(identity_model, shielded.label("protected"))
    if municipalities is not None:
        stmt = stmt.where(identity_model.municipality_code.in_(municipalities))

    async def rows_of(statement) -> Found:
        result = (await session.execute(statement)).all()
        return Found([r[0] for r in result], {r[0].resident_code for r in result if r.protected})

    if isinstance(query, ByResidentCode):
        return await rows_of(stmt.where(identity_model.resident_code == query.resident_code))
    if isinstance(query, ByPseudonym):
        if resolve_pseudonym is None:
            raise ProvisionRefused("pseudonyms-not-resolved-here", "pseudonyms are resolved only by the national server, for national affairs")
        resident_code = resolve_pseudonym(query.pseudonym)
        if resident_code is None:  # another agency's pseudonym, or none at all: nothing to find
            return Found([], set())
        return await rows_of(stmt.where(identity_model.resident_code == resident_code))
    if isinstance(query, ByIndividualNumber):
        return await rows_of(stmt.where(identity_model.individual_number == query.individual_number))
    assert isinstance(query, ByBasicItems)
    if not (query.family_name or query.family_name_kana):
        raise ProvisionRefused("search-needs-name", "a search by basic items needs the family name or its furigana")
    compares = {
        Criterion.family_name: lambda: identity_model.family_name == query.family_name,
        Criterion.given_name: lambda: identity_model.given_name == query.given_name,
        Criterion.family_name_kana: lambda: identity_model.family_name_kana == query.family_name_kana,
        Criterion.given_name_kana: lambda: identity_model.given_name_kana == query.given_name_kana,
        Criterion.birth_date: lambda: identity_model.birth_date == query.birth_date,
        Criterion.sex: lambda: identity_model.sex == query.sex.value,
        Criterion.address_contains: lambda: identity_model.address_text.like("%" + _escape_like(query.address_contains) + "%"),
    }
    blind = criteria_blind_to_protected(affair)
    stmt = stmt.where(identity_model.status == "active")
    for criterion in sorted(criteria_of(query)):
        compare = compares[criterion]()
        stmt = stmt.where(or_(compare, shielded) if criterion in blind else compare)
    found = await rows_of(stmt.order_by(identity_model.resident_code).limit(query.limit + 1))
    if len(found.rows) > query.limit:
        raise TooManyResults()
    return found


def record_provisions(session: AsyncSession, outbox_model, *, provider: str, grant: Grant, rows: list, reason: str | None, query_type: str, trace_id: str | None, bulk_job_id=None, notification_id=None, protected: Collection[str] = ()) -> list[ProvisionRecord]:
    """One provision record per person, in the same transaction as the answer is prepared.

    ``rows`` are anything with ``resident_code`` and ``municipality_code``; the
    items of a ``protected`` person are those actually given (see :func:`items_for`).
    """
    now = datetime.now(UTC)
    records = []
    for row in rows:
        record = ProvisionRecord(
            record_id=uuid.uuid4(), provided_at=now, provider=provider, recipient=grant.agency.id, recipient_name=grant.agency.name,
            affair=grant.affair.id, affair_name=grant.affair.name, items=list(items_for(grant, protected=row.resident_code in protected)), resident_code=row.resident_code,
            municipality_code=row.municipality_code, reason=reason, query_type=query_type, trace_id=trace_id,
            bulk_job_id=bulk_job_id, notification_id=notification_id,
        )
        enqueue(session, outbox_model, destination=topics.PROVISIONS, key=row.resident_code, kind="provision-record", payload=record.model_dump_json())
        records.append(record)
    return records


def link_to_changes(rows: list) -> None:
    """Link the provision span to the traces of the changes being provided (counter → agency)."""
    span = trace.get_current_span()
    for row in rows:
        if row.traceparent:
            ctx = trace.get_current_span(context_from_traceparent(row.traceparent)).get_span_context()
            if ctx.is_valid:
                span.add_link(ctx, {"jukinet.link": "provided-change"})


def subject_for(grant: Grant, resident_code: str, pseudonymizer) -> tuple[str | None, str | None]:
    """(resident code, pseudonym) the agency may see for this person under this grant."""
    if grant.affair.requires_resident_code:
        return resident_code, None
    if pseudonymizer is None:
        return None, None
    return None, pseudonymizer.pseudonym(grant.agency.id, resident_code)


def provision_router(rt, *, identity_model, outbox_model, relay, level: Level, prefecture: str | None, municipalities: set[str] | None, pseudonymizer=None, serves_prefectural_affairs: bool = False, marker_model=None):
    """``POST /v1/persons/query`` for agencies: signed token, stated affair, recorded provision.

    ``serves_prefectural_affairs``: the national server of a network without the prefecture
    tier (R-NET-4) also serves prefectural agencies, exactly as their prefecture server would.
    """
    from typing import Annotated

    from fastapi import APIRouter, Body, Depends, Response

    from contracts.provision import PersonQuery, QueryResult
    from services.common.auth import bearer_verifier
    from services.common.problems import ProblemError
    from services.common.tokens import VerifiedToken

    router = APIRouter(prefix="/v1", tags=["provision"])
    verify = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party.startswith(AGENCY_PARTY_PREFIX))
    topology: Topology = rt.settings.topology_model

    def scope_of(agency_id: str) -> tuple[Level, str | None, set[str] | None, object]:
        """(level, prefecture, municipalities, pseudonymizer) this provider serves the agency with.

        Without the prefecture tier a prefectural agency gets what its prefecture server would
        give: its prefecture's affairs, only persons registered in its municipalities, and no
        pseudonym (prefecture servers hold no pseudonym key), so answers do not depend on the topology."""
        agency = topology.agency(agency_id)
        if serves_prefectural_affairs and agency is not None and agency.level is Level.prefectural:
            return Level.prefectural, agency.prefecture, {m.code for m in topology.municipalities if m.prefecture == agency.prefecture}, None
        return level, prefecture, municipalities, pseudonymizer

    @router.post("/persons/query", response_model=QueryResult)
    async def query_persons(query: Annotated[PersonQuery, Body()], response: Response, token: Annotated[VerifiedToken, Depends(verify)]) -> QueryResult:
        """Look up persons for an affair the agency is authorised for. Every person provided is recorded."""
        agency_id = token.issuer.removeprefix(AGENCY_PARTY_PREFIX)
        level, prefecture, municipalities, pseudonymizer = scope_of(agency_id)
        try:
            grant = authorise(topology, agency_id=agency_id, affair_id=query.affair, fields=query.fields, level=level, prefecture=prefecture, query=query)
        except ProvisionRefused as exc:
            raise ProblemError(403, exc.slug, "Not authorised for this affair", exc.detail) from None
        trace_id = f"{trace.get_current_span().get_span_context().trace_id:032x}"
        try:
            async with rt.sessions() as session, session.begin():
                resolve = (lambda p: pseudonymizer.resolve(agency_id, p)) if pseudonymizer is not None else None
                rows, shielded = await find(session, identity_model, query, affair=grant.affair, marker_model=marker_model, municipalities=municipalities,
                                            resolve_pseudonym=resolve)  # with their DV protection
                persons = [project(row, items_for(grant, protected=row.resident_code in shielded), pseudonym=subject_for(grant, row.resident_code, pseudonymizer)[1],
                                   protected=row.resident_code in shielded) for row in rows]
                records = record_provisions(session, outbox_model, provider=rt.party, grant=grant, rows=rows, reason=query.reason, query_type=query.type, trace_id=trace_id,
                                            protected=shielded)
                link_to_changes(rows)
        except TooManyResults:
            raise ProblemError(400, "too-many-results", "Too many persons match", f"more than {query.limit} persons match; narrow the search") from None
        except ProvisionRefused as exc:
            raise ProblemError(400, exc.slug, "The search is not specific enough", exc.detail) from None
        relay.wakeup.set()
        count_provisions(affair=grant.affair.id, provider=rt.party, persons=len(records))
        response.headers["X-Provision-Records"] = ",".join(str(r.record_id) for r in records)
        return QueryResult(affair=grant.affair.id, items=list(grant.items), persons=persons)

    return router


AGENCY_PARTY_PREFIX = "agency-"
