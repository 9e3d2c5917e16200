"""Household provision: the household stays with the municipality; the national
server forwards authorised requests to the CS; both record the provision."""

from __future__ import annotations

from datetime import date

import httpx

from services.common.tokens import load_private_key, sign_token
from tests.conftest import wait_until
from tests.e2e.helpers import agency_call, birth_body, register


def test_household_composition_only_for_household_based_affairs(network, db):
    head = register(network, "131130")
    child = register(network, "131130", birth_body("131130", family_name=head["name"]["family_name"], family_kana=head["name"]["family_name_kana"], household_id=head["household_id"]))
    for code in (head["resident_code"], child["resident_code"]):
        wait_until(lambda c=code: db("national").value("select count(*) from identity where resident_code = %s", (c,)) == 1, what="both at national")
    wait_until(lambda: db("cs_131130").value("select count(*) from household_members where household_id = %s", (head["household_id"],)) == 2, what="the household at the CS")

    answer = agency_call(network, "cfa-child-allowance", "POST", "/v1/households/query", json={"affair": "child-allowance", "resident_code": child["resident_code"], "reason": "児童手当の認定"})
    assert answer.status_code == 200, answer.text
    members = {m["resident_code"]: m for m in answer.json()["members"]}
    assert set(members) == {head["resident_code"], child["resident_code"]}
    assert members[head["resident_code"]]["head"] and members[head["resident_code"]]["relationship"] == "世帯主"
    assert members[child["resident_code"]]["relationship"] == "子" and not members[child["resident_code"]]["head"]
    assert members[child["resident_code"]]["name"]["family_name"] == head["name"]["family_name"]

    # both the national server and the CS recorded the provision of each member
    def providers(code):
        return sorted(r[0] for r in db("provlog").rows("select provider from provision_records where resident_code = %s and payload::jsonb ->> 'query_type' = 'Household'", (code,)))
    for code in members:
        wait_until(lambda c=code: providers(c) == ["cs-131130", "national"], what="household provision recorded by national and CS")

    # not for an affair that is not household-based, at the national server …
    refused = agency_call(network, "pension-service", "POST", "/v1/households/query", json={"affair": "pension-benefits", "resident_code": child["resident_code"]})
    assert refused.status_code == 403 and refused.json()["type"].endswith("/not-a-household-affair")
    # … nor at the CS, even when asked by the national server itself
    national_key = load_private_key(network.private_keys / "national.key")
    direct = httpx.post(f"{network.url('cs_gateway.131130')}/internal/v1/household-queries",
                        json={"resident_code": child["resident_code"], "agency": "pension-service", "agency_name": "x", "affair": "pension-benefits"},
                        headers={"authorization": f"Bearer {sign_token(national_key, issuer='national', audience='cs-131130')}"})
    assert direct.status_code == 403
    # and no other party may ask the CS
    agency_direct = httpx.post(f"{network.url('cs_gateway.131130')}/internal/v1/household-queries",
                               json={"resident_code": child["resident_code"], "agency": "cfa-child-allowance", "agency_name": "x", "affair": "child-allowance"},
                               headers={"authorization": f"Bearer {network.agency_token('cfa-child-allowance', audience='cs-131130')}"})
    assert agency_direct.status_code == 401

    # a household change reaches the CS; the answer follows it
    split = httpx.post(f"{network.url('municipal_rrs.131130')}/v1/residents/{child['resident_code']}/household", json={"household": {"relationship": "世帯主"}, "change_date": date.today().isoformat()})
    assert split.status_code == 200
    wait_until(lambda: db("cs_131130").value("select count(*) from household_members where household_id = %s", (head["household_id"],)) == 1, what="the split at the CS")
    alone = agency_call(network, "cfa-child-allowance", "POST", "/v1/households/query", json={"affair": "child-allowance", "resident_code": child["resident_code"]}).json()
    assert [(m["resident_code"], m["head"]) for m in alone["members"]] == [(child["resident_code"], True)]
