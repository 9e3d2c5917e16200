"""Household provision: the household stays with the municipality; the national
server forwards authorised requests to the CS; both record the provision."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
from sqlalchemy import text

from contracts.household import HouseholdComposition, HouseholdMemberEntry
from contracts.identifiers import new_resident_code
from contracts.register import Relationship
from services.common.db import make_engine, make_sessionmaker
from services.common.tokens import load_private_key, sign_token
from services.cs_gateway import households
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
    split = httpx.post(f"{network.url('municipal_rrs.131130')}/v1/residents/{child['resident_code']}/household", auth=network.staff_auth(), json={"household": {"relationship": "世帯主"}, "change_date": date.today().isoformat()})
    assert split.status_code == 200
    wait_until(lambda: db("cs_131130").value("select count(*) from household_members where household_id = %s", (head["household_id"],)) == 1, what="the split at the CS")
    alone = agency_call(network, "cfa-child-allowance", "POST", "/v1/households/query", json={"affair": "child-allowance", "resident_code": child["resident_code"]}).json()
    assert [(m["resident_code"], m["head"]) for m in alone["members"]] == [(child["resident_code"], True)]


async def test_the_cs_keeps_the_newest_composition_and_moves_members_between_households(network):
    """The CS keeps a composition: those no longer listed leave, a member listed elsewhere moves, a late older composition changes nothing."""
    engine = make_engine(network.database_url("cs_gateway.131130"))
    sessions = make_sessionmaker(engine)
    first, second = uuid.uuid4(), uuid.uuid4()
    a, b, c = (new_resident_code() for _ in range(3))
    start = datetime.now(UTC)

    async def store(household_id, codes, minutes) -> bool:
        composition = HouseholdComposition(household_id=household_id, municipality_code="131130", recorded_at=start + timedelta(minutes=minutes),
                                           members=[HouseholdMemberEntry(resident_code=code, relationship=Relationship.cohabitant) for code in codes])
        async with sessions() as session, session.begin():
            return await households.store_composition(session, composition)

    async def members() -> dict[str, set[str]]:
        async with sessions() as session:
            rows = (await session.execute(text("select household_id, resident_code from household_members where household_id in (:x, :y)"), {"x": first, "y": second})).all()
        kept = {"first": set(), "second": set()}
        for household_id, code in rows:
            kept["first" if household_id == first else "second"].add(code)
        return kept

    try:
        assert await store(first, [a, b], 1)
        assert await members() == {"first": {a, b}, "second": set()}
        assert await store(second, [b, c], 2)
        assert await members() == {"first": {a}, "second": {b, c}}, "b moved; a stayed"
        assert not await store(first, [a, b, c], 0), "older than the one kept"
        assert await members() == {"first": {a}, "second": {b, c}}
        assert await store(second, [b, c], 2), "the same composition again is kept again"
        assert await store(first, [], 3)
        assert await members() == {"first": set(), "second": {b, c}}, "a dissolved household keeps no member"
    finally:
        await engine.dispose()
