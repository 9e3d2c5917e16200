"""A birth at the counter travels RRS → CS → prefecture → national → agency,
and the resident sees the provision (issue: the registry network end to end)."""

from __future__ import annotations

import json

import httpx

from tests.conftest import wait_until
from tests.e2e.helpers import query, register, unique_reason


def _trace_spans(network, node_id):
    path = network.trace_file(node_id)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_birth_reaches_every_tier_and_an_authorised_agency(network, db):
    person = register(network, "131016")
    code = person["resident_code"]
    assert person["version"] == 1 and person["status"] == "active"

    # every tier holds the identity, at the same version
    for database in ("cs_131016", "pref_13", "national"):
        wait_until(lambda: db(database).value("select version from identity where resident_code = %s", (code,)) == 1, what=f"{code} at {database}")
    assert db("pref_27").value("select count(*) from identity where resident_code = %s", (code,)) == 0

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
    credential = httpx.post(f"{network.url('municipal_rrs.131016')}/v1/residents/{code}/portal-credential").json()
    auth = {"authorization": f"Bearer {credential['token']}"}
    records = wait_until(
        lambda: httpx.get(f"{network.url('provision_log.provision_log')}/v1/me/provisions", headers=auth).json()["records"],
        what="the provision record in the resident's list",
    )
    assert [r["record_id"] for r in records] == record_ids
    assert records[0]["recipient"] == "pension-service" and records[0]["affair"] == "pension-benefits"
    assert records[0]["reason"] == reason and "name" in records[0]["items"] and records[0]["provider"] == "national"


def test_prefecture_serves_prefectural_affairs_for_its_own_residents_only(network, db):
    tokyo = register(network, "131130")
    osaka = register(network, "272035")
    wait_until(lambda: db("pref_13").value("select count(*) from identity where resident_code = %s", (tokyo["resident_code"],)) == 1, what="Tokyo resident at pref 13")
    wait_until(lambda: db("pref_27").value("select count(*) from identity where resident_code = %s", (osaka["resident_code"],)) == 1, what="Osaka resident at pref 27")
    found = query(network, "tokyo-police-license", {"type": "ByResidentCode", "affair": "pref-driver-license", "resident_code": tokyo["resident_code"]}, provider="pref-13")
    assert found.status_code == 200, found.text
    person = found.json()["persons"][0]
    assert person["resident_code"] is None, "the driver-licence affair does not carry the resident code"
    assert person["name"]["family_name"] == tokyo["name"]["family_name"]
    other = query(network, "tokyo-police-license", {"type": "ByResidentCode", "affair": "pref-driver-license", "resident_code": osaka["resident_code"]}, provider="pref-13")
    assert other.status_code == 200 and other.json()["persons"] == []
    # a prefectural affair is not served by the national server
    wrong = query(network, "tokyo-police-license", {"type": "ByResidentCode", "affair": "pref-driver-license", "resident_code": tokyo["resident_code"]})
    assert wrong.status_code == 403


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
    by_number = query(network, "pension-service", {"type": "ByIndividualNumber", "affair": "pension-benefits", "individual_number": people[1]["individual_number"]})
    assert [p["resident_code"] for p in by_number.json()["persons"]] == [people[1]["resident_code"]]


def test_one_trace_from_counter_to_agency(network, db):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: db("national").value("select version from identity where resident_code = %s", (code,)) == 1, what="birth at national")
    assert query(network, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code}).status_code == 200

    def birth_trace_id():
        for span in _trace_spans(network, "municipal_rrs.131016"):
            if span["kind"] == "SERVER" and span["attributes"].get("http.route") == "/v1/residents" and span["name"].startswith("POST"):
                yield span["trace_id"]

    def national_consumed_in_birth_trace():
        births = set(birth_trace_id())
        consumed = {s["trace_id"] for s in _trace_spans(network, "national_server.national") if s["name"].startswith("consume")}
        return births & consumed

    shared = wait_until(national_consumed_in_birth_trace, what="a national consume span in the trace of a counter birth")
    cs_spans = {s["trace_id"] for s in _trace_spans(network, "cs_gateway.131016")}
    pref_spans = {s["trace_id"] for s in _trace_spans(network, "prefecture_server.13") if s["name"].startswith("consume")}
    assert shared & cs_spans and shared & pref_spans, "the CS and the prefecture server took part in the same trace"

    def lookup_linked_to_birth():
        lookups = [s for s in _trace_spans(network, "national_server.national") if s["kind"] == "SERVER" and s["attributes"].get("http.route") == "/v1/persons/query"]
        return [s for s in lookups if any(link["trace_id"] in shared for link in s["links"])]

    wait_until(lookup_linked_to_birth, what="the agency lookup span linked to the birth's trace")
