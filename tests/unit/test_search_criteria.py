"""You cannot search by what you cannot see: which criteria an affair may use, and that a criterion on an
item withheld from a DV-protected person never discriminates them (services/common/provision.py)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import TypeAdapter
from sqlalchemy.dialects import postgresql

from contracts.affairs import AFFAIRS, CRITERION_ITEMS, Criterion, Item, criteria_allowed
from contracts.bulk import BulkQuery
from contracts.provision import CRITERIA_MODELS, NOT_CRITERIA, PersonQuery, criteria_of
from services.common.provision import ProvisionRefused, check_criteria, criteria_blind_to_protected, find
from services.national_server.bulk import criteria_refusal, refused_criteria_in
from services.national_server.models import Identity, ProtectionMarkerRow
from tests.criteria import criteria_row

QUERY = TypeAdapter(PersonQuery)
ROW = TypeAdapter(BulkQuery)
EVERY = [(a, c) for a in AFFAIRS for c in Criterion]


def test_every_member_of_every_query_is_a_criterion_with_its_item_or_selects_nobody():
    members = {name for model in CRITERIA_MODELS for name in model.model_fields} - NOT_CRITERIA
    assert members == {c.value for c in Criterion}, "a new query member must be mapped to the item it reveals"
    assert set(CRITERION_ITEMS) == set(Criterion)
    assert all(item is None or isinstance(item, Item) for item in CRITERION_ITEMS.values())


@pytest.mark.parametrize(("affair_id", "criterion"), EVERY)
def test_a_criterion_is_allowed_exactly_when_the_affair_receives_its_item(affair_id, criterion):
    affair = AFFAIRS[affair_id]
    query = QUERY.validate_python({**criteria_row(criterion), "affair": affair_id})
    assert criterion in criteria_of(query)
    item = CRITERION_ITEMS[criterion]
    if item is None or item in affair.items:
        assert criterion in criteria_allowed(affair)
        check_criteria(affair, query)
        assert criteria_refusal(affair, ROW.validate_python(criteria_row(criterion))) is None
    else:
        assert criterion not in criteria_allowed(affair)
        with pytest.raises(ProvisionRefused) as refused:
            check_criteria(affair, query)
        assert refused.value.slug == "criterion-not-authorised" and criterion.value in refused.value.detail
        assert criteria_refusal(affair, ROW.validate_python(criteria_row(criterion))).startswith("criterion-not-authorised")


def test_a_pseudonymous_affair_may_not_search_by_a_shared_identifier():
    for affair in AFFAIRS.values():
        if not affair.requires_resident_code:
            assert {Criterion.resident_code, Criterion.individual_number}.isdisjoint(criteria_allowed(affair))
            assert Criterion.pseudonym in criteria_allowed(affair)


@pytest.mark.parametrize("affair_id", AFFAIRS)
def test_criteria_on_the_withheld_address_are_blind_to_protected_persons(affair_id):
    affair = AFFAIRS[affair_id]
    blind = criteria_blind_to_protected(affair)
    assert blind <= criteria_allowed(affair)
    assert blind == (set() if affair.requires_address else {Criterion.address_contains})


def test_an_upload_line_is_refused_only_for_a_criterion_it_sets():
    refused = frozenset({"resident_code", "individual_number"})
    assert refused_criteria_in(b'{"type": "ByResidentCode", "resident_code": "12345678903"}', refused) == ["resident_code"]
    assert refused_criteria_in(b'{"type": "ByBasicItems", "family_name": "resident_code", "birth_date": "1990-04-01"}', refused) == []
    # a criterion spelt with a JSON escape is the same criterion: the upload refuses it too
    assert refused_criteria_in(b'{"type": "ByResidentCode", "\\u0072esident_code": "12345678903"}', refused) == ["resident_code"]
    assert refused_criteria_in(b'{"type": "ByResidentCode", "resident_code": null}', refused) == []
    assert refused_criteria_in(b'{"type": "ByResidentCode", "resident_code": "1"', refused) == []  # not JSON: the worker answers it invalid
    assert refused_criteria_in(b'{"type": "ByResidentCode", "resident_code": "12345678903"}', frozenset()) == []


class _Capture:
    """A session that records the statement a search runs and finds nobody."""

    def __init__(self):
        self.sql: list[str] = []

    async def execute(self, statement):
        self.sql.append(str(statement.compile(dialect=postgresql.dialect())))

        class _Empty:
            def all(self):
                return []

        return _Empty()


def _search_sql(affair_id: str, **criteria) -> str:
    session = _Capture()
    query = QUERY.validate_python({"type": "ByBasicItems", "affair": affair_id, "family_name": "検証", "birth_date": "1990-04-01", **criteria})
    asyncio.run(find(session, Identity, query, affair=AFFAIRS[affair_id], marker_model=ProtectionMarkerRow, municipalities=None))
    [sql] = session.sql
    return " ".join(sql.split())


def test_the_address_criterion_passes_a_protected_person_where_the_address_is_withheld():
    withheld = _search_sql("passport-issuance", address_contains="千代田")
    assert "identity.address_text LIKE" in withheld
    like = withheld.index("identity.address_text LIKE")
    assert " OR (EXISTS (SELECT" in withheld[like:], "a protected person passes the address criterion whatever it says"
    assert "protection_markers.protected IS true" in withheld[like:]
    # the other criteria, and the address for an affair that receives it, discriminate everyone
    given = _search_sql("pension-benefits", address_contains="千代田")
    like = given.index("identity.address_text LIKE")
    assert " OR " not in given[like:given.index("ORDER BY")]
    assert " OR " not in _search_sql("passport-issuance", sex="female").split("FROM identity")[1]
    # ordered and limited by the resident code alone, never by a withheld item
    assert withheld.endswith("ORDER BY identity.resident_code LIMIT %(param_1)s")


def test_a_search_with_a_refused_criterion_reads_nothing():
    session = _Capture()
    query = QUERY.validate_python({**criteria_row(Criterion.individual_number), "affair": "passport-issuance"})
    with pytest.raises(ProvisionRefused):
        asyncio.run(find(session, Identity, query, affair=AFFAIRS["passport-issuance"], marker_model=ProtectionMarkerRow, municipalities=None))
    assert session.sql == []
