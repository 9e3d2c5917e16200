"""A birth at the counter travels RRS → CS → prefecture → national → agency,
and the resident sees the provision (issue: the registry network end to end).
Without the prefecture tier the CS sends to the national server, which then
serves prefectural affairs too (R-NET-4)."""

from __future__ import annotations

import random
from datetime import date, timedelta

import httpx

from tests.conftest import wait_until
from tests.e2e.helpers import birth_body, copies_of, needs_prefecture_tier, prefecture_node, query, register, trace_spans, unique_reason


def test_birth_reaches_every_tier_and_an_authorised_agency(network, db):
    person = register(network, "131016")
    code = person["resident_code"]
    assert person["version"] == 1 and person["status"] == "active"

    # every tier holds the identity, at the same version; another prefecture's server does not
    for database in copies_of(network, "131016"):
        wait_until(lambda: db(database).value("select version from identity where resident_code = %s", (code,)) == 1, what=f"{code} at {database}")
    for database in {prefecture_node(network, p.code).database for p in network.topology.prefectures} - set(copies_of(network, "131016")):
        assert db(database).value("select count(*) from identity where resident_code = %s", (code,)) == 0

    reason = unique_reason()
    response = query(network, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code, "reason": reason})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["resident_code"] for p in body["persons"]] == [code]
    provided = body["persons"][0]
    assert provided["name"]["family_name"] == person["name"]["family_name"]
    assert provided["address"]["text"] == person["address"]["text"]
    assert provided["individual_number"] is None, "the affair does not cover the individual number"
    record_ids = response.headers["x-provision-records"].split(",")
    assert len(record_ids) == 1

    # the resident sees the provision with its details
    credential = httpx.post(f"{network.url('municipal_rrs.131016')}/v1/residents/{code}/portal-credential", auth=network.staff_auth(),
                            json={"identity_check": {"method": "mynumber_card", "document_number_last4": "1234"}}).json()
    auth = {"authorization": f"Bearer {credential['token']}"}
    records = wait_until(
        lambda: httpx.get(f"{network.url('provision_log.provision_log')}/v1/me/provisions", headers=auth).json()["records"],
        what="the provision record in the resident's list",
    )
    assert [r["record_id"] for r in records] == record_ids
    assert records[0]["recipient"] == "pension-service" and records[0]["affair"] == "pension-benefits"
    assert records[0]["reason"] == reason and "name" in records[0]["items"] and records[0]["provider"] == "national"


def _slug(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["type"].rsplit("/", 1)[-1]


def test_prefectural_affairs_are_served_for_the_prefectures_own_residents_only(network, db):
    """By the prefecture server, or by the national server without that tier: same answers, rules and records."""
    # born on days no other test uses: a search by name and birth date finds these two alone (synthetic names repeat)
    tokyo, osaka = (register(network, m, birth_body(m, born=date(1940, 1, 1) + timedelta(days=random.randint(0, 25000)))) for m in ("131130", "272035"))
    serving_13, serving_27 = prefecture_node(network, "13"), prefecture_node(network, "27")
    wait_until(lambda: db(serving_13.database).value("select count(*) from identity where resident_code = %s", (tokyo["resident_code"],)) == 1, what=f"Tokyo resident at {serving_13.id}")
    wait_until(lambda: db(serving_27.database).value("select count(*) from identity where resident_code = %s", (osaka["resident_code"],)) == 1, what=f"Osaka resident at {serving_27.id}")
    def licence(person: dict) -> dict:  # a pseudonymous affair searches by what it receives, never by the resident code
        return {"type": "ByBasicItems", "affair": "pref-driver-license", "family_name": person["name"]["family_name"], "given_name": person["name"]["given_name"],
                "birth_date": person["birth_date"]}

    found = query(network, "tokyo-police-license", licence(tokyo))
    assert found.status_code == 200, found.text
    [person] = found.json()["persons"]
    assert person["resident_code"] is None and person["pseudonym"] is None, "the driver-licence affair carries no identifier, as at a prefecture server"
    assert person["name"]["family_name"] == tokyo["name"]["family_name"]
    [record_id] = found.headers["x-provision-records"].split(",")
    provider = wait_until(lambda: db("provlog").value("select provider from provision_records where record_id = %s", (record_id,)), what="the provision record")
    assert provider == serving_13.party
    # only persons of the agency's own prefecture
    other = query(network, "tokyo-police-license", licence(osaka))
    assert other.status_code == 200 and other.json()["persons"] == [] and other.headers.get("x-provision-records", "") == ""
    welfare = query(network, "osaka-welfare", {"type": "ByResidentCode", "affair": "pref-disability-certificate", "resident_code": osaka["resident_code"]})
    assert [p["resident_code"] for p in welfare.json()["persons"]] == [osaka["resident_code"]]
    assert query(network, "osaka-welfare", {"type": "ByResidentCode", "affair": "pref-disability-certificate", "resident_code": tokyo["resident_code"]}).json()["persons"] == []
    # the same authorisation rules, refusals recorded where the agency called
    before = db(serving_13.database).value("select count(*) from refusals")
    not_authorised = query(network, "tokyo-police-license", {"type": "ByResidentCode", "affair": "pref-disability-certificate", "resident_code": tokyo["resident_code"]})
    assert not_authorised.status_code == 403 and _slug(not_authorised) == "affair-not-authorised"
    beyond = query(network, "tokyo-police-license", {**licence(tokyo), "fields": ["name", "change"]})
    assert beyond.status_code == 403 and _slug(beyond) == "fields-not-authorised"
    by_code = query(network, "tokyo-police-license", {"type": "ByResidentCode", "affair": "pref-driver-license", "resident_code": tokyo["resident_code"]})
    assert by_code.status_code == 403 and _slug(by_code) == "criterion-not-authorised"
    assert db(serving_13.database).value("select count(*) from refusals") >= before + 3
    pseudonymous = query(network, "tokyo-police-license", {"type": "ByPseudonym", "affair": "pref-driver-license", "pseudonym": "p1" + "a" * 44})
    assert pseudonymous.status_code == 400 and _slug(pseudonymous) == "pseudonyms-not-resolved-here"
    # a national agency does not get prefectural affairs from anyone
    national_agency = query(network, "pension-service", licence(tokyo))
    assert national_agency.status_code == 403 and _slug(national_agency) == "affair-not-authorised"


@needs_prefecture_tier
def test_the_national_server_sends_prefectural_agencies_to_their_prefecture_server(network, db):
    tokyo = register(network, "131130")
    wait_until(lambda: db("national").value("select count(*) from identity where resident_code = %s", (tokyo["resident_code"],)) == 1, what="Tokyo resident at national")
    wrong = query(network, "tokyo-police-license", {"type": "ByResidentCode", "affair": "pref-driver-license", "resident_code": tokyo["resident_code"]}, provider="national")
    assert wrong.status_code == 403 and _slug(wrong) == "wrong-provider"
    assert "prefecture_server.13" in wrong.json()["detail"] and "'pref-13'" in wrong.json()["detail"]
    assert "x-provision-records" not in wrong.headers
    # and a prefecture server sends a national agency to the national server
    national_affair = query(network, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": tokyo["resident_code"]}, provider="pref-13")
    assert national_affair.status_code == 403 and _slug(national_affair) == "wrong-provider" and "national_server.national" in national_affair.json()["detail"]


def test_search_by_basic_items_with_limit(network, db):
    family, kana = "鈴木", "スズキ"
    from datetime import date

    born = date(2026, 1, 15)
    from tests.e2e.helpers import birth_body

    people = [register(network, "131016", birth_body("131016", family_name=family, family_kana=kana, born=born)) for _ in range(3)]
    wait_until(lambda: db("national").value("select count(*) from identity where family_name = %s and birth_date = %s", (family, born)) >= 3, what="three namesakes at national")
    base = {"type": "ByBasicItems", "affair": "pension-benefits", "family_name": family, "birth_date": born.isoformat()}
    too_many = query(network, "pension-service", {**base, "limit": 2})
    assert too_many.status_code == 400
    assert too_many.headers["content-type"].startswith("application/problem+json")
    assert too_many.json()["type"].endswith("/too-many-results")
    assert "x-provision-records" not in too_many.headers
    narrowed = query(network, "pension-service", {**base, "given_name": people[0]["name"]["given_name"], "sex": people[0]["sex"]})
    assert narrowed.status_code == 200
    assert people[0]["resident_code"] in [p["resident_code"] for p in narrowed.json()["persons"]]
    by_kana = query(network, "pension-service", {"type": "ByBasicItems", "affair": "pension-benefits", "family_name_kana": kana, "birth_date": born.isoformat(), "limit": 50})
    assert {p["resident_code"] for p in people} <= {p["resident_code"] for p in by_kana.json()["persons"]}
    # pension benefits do not receive the individual number, so they cannot search by it either
    by_number = query(network, "pension-service", {"type": "ByIndividualNumber", "affair": "pension-benefits", "individual_number": people[1]["individual_number"]})
    assert by_number.status_code == 403 and by_number.json()["type"].endswith("/criterion-not-authorised")


def test_one_trace_from_counter_to_agency(network, db):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: db("national").value("select version from identity where resident_code = %s", (code,)) == 1, what="birth at national")
    assert query(network, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code}).status_code == 200

    def birth_trace_id():
        for span in trace_spans(network, "municipal_rrs.131016"):
            if span["kind"] == "SERVER" and span["attributes"].get("http.route") == "/v1/residents" and span["name"].startswith("POST"):
                yield span["trace_id"]

    def national_consumed_in_birth_trace():
        births = set(birth_trace_id())
        consumed = {s["trace_id"] for s in trace_spans(network, "national_server.national") if s["name"].startswith("consume")}
        return births & consumed

    shared = wait_until(national_consumed_in_birth_trace, what="a national consume span in the trace of a counter birth")
    cs_spans = {s["trace_id"] for s in trace_spans(network, "cs_gateway.131016")}
    pref_spans = {s["trace_id"] for s in trace_spans(network, prefecture_node(network, "13").id) if s["name"].startswith("consume")}
    assert shared & cs_spans and shared & pref_spans, "the CS and the prefecture tier (the national server without it) took part in the same trace"

    def lookup_linked_to_birth():
        lookups = [s for s in trace_spans(network, "national_server.national") if s["kind"] == "SERVER" and s["attributes"].get("http.route") == "/v1/persons/query"]
        return [s for s in lookups if any(link["trace_id"] in shared for link in s["links"])]

    wait_until(lookup_linked_to_birth, what="the agency lookup span linked to the birth's trace")
