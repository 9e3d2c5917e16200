"""You cannot search by what you cannot see (issue 18): a query may use a criterion only on items its affair
may receive, and a criterion on an item withheld from a DV-protected person (the address, for an affair that
does not require it) never discriminates that person, so guessing the address one character at a time at
the national server, a prefecture server or in a bulk job learns nothing."""

from __future__ import annotations

import json

import httpx

from contracts.affairs import AFFAIRS, CRITERION_ITEMS, Criterion, criteria_allowed
from tests.conftest import wait_until
from tests.criteria import criteria_row
from tests.e2e.helpers import birth_body, prefecture_node, query, register
from tests.e2e.test_bulk import result, submit, wait_completed
from tests.e2e.test_dv import ADULT, marker, protect

CHIYODA = "131016"
#: headers that differ between two calls whatever they ask (the records' ids, the time, the trace)
PER_REQUEST = {"x-provision-records", "date", "traceparent", "x-request-id", "x-trace-id"}


def _slug(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["type"].rsplit("/", 1)[-1]


def _refusals(db, database: str) -> int:
    return db(database).value("select count(*) from refusals where reason = 'criterion-not-authorised'")


def test_every_criterion_of_every_affair_is_allowed_or_refused_and_recorded(network, db):
    """Generated from the catalogue and the query contracts: for each affair an agency of this network
    serves, each criterion; allowed ones are answered, the others refused (403) and recorded where asked."""
    walked = 0
    for affair in AFFAIRS.values():
        agencies = [a for a in network.topology.agencies if affair.id in a.affairs]
        if not agencies:  # no agency for it in this topology; the unit test walks it
            continue
        agency = agencies[0]
        provider = network.provider_for(agency.id)
        database = "national" if provider == "national" else prefecture_node(network, agency.prefecture).database
        for criterion in Criterion:
            body = {**criteria_row(criterion), "affair": affair.id}
            before = _refusals(db, database)
            response = query(network, agency.id, body)
            if criterion in criteria_allowed(affair):
                assert response.status_code != 403, f"{affair.id} × {criterion}: {response.text}"
                assert response.status_code == 200 or _slug(response) == "pseudonyms-not-resolved-here", f"{affair.id} × {criterion}: {response.text}"
                assert _refusals(db, database) == before
            else:
                assert response.status_code == 403 and _slug(response) == "criterion-not-authorised", f"{affair.id} × {criterion}: {response.text}"
                assert criterion.value in response.json()["detail"] and "x-provision-records" not in response.headers
                assert _refusals(db, database) == before + 1, f"{affair.id} × {criterion}: refusal not recorded at {database}"
                item = CRITERION_ITEMS[criterion]
                assert item is not None and item not in affair.items
            walked += 1
    assert walked >= len(Criterion) * 6


def test_a_bulk_job_with_a_criterion_its_affair_may_not_use_is_refused_and_recorded(network, db):
    before, jobs = _refusals(db, "national"), db("national").value("select count(*) from bulk_jobs")
    rows = [json.dumps(criteria_row(Criterion.family_name), ensure_ascii=False), json.dumps(criteria_row(Criterion.resident_code))]
    refused = submit(network, "mofa-passport", "passport-issuance", rows)
    assert refused.status_code == 403 and _slug(refused) == "criterion-not-authorised" and "row 2" in refused.json()["detail"]
    assert _refusals(db, "national") == before + 1
    assert db("national").value("select path from refusals where reason = 'criterion-not-authorised' order by id desc limit 1") == "/v1/bulk-jobs"
    assert db("national").value("select count(*) from bulk_jobs") == jobs and db("national").value("select count(*) from bulk_rows where job_id not in (select job_id from bulk_jobs)") == 0


def _guesses(address: str) -> list[tuple[str, str]]:
    """The attack: grow the guess one character at a time; at each step the right next character and a wrong one."""
    steps = []
    for i in range(1, len(address) + 1):
        right = address[:i]
        wrong = address[:i - 1] + ("北" if address[i - 1] != "北" else "南")
        steps.append((right, wrong))
    return steps


def test_guessing_a_protected_persons_address_learns_nothing(network, db):
    body = birth_body(CHIYODA, born=ADULT)
    victim = register(network, CHIYODA, body)
    code = victim["resident_code"]
    wait_until(lambda: db("national").value("select version from identity where resident_code = %s", (code,)) == 1, what="registered nationally")
    address = victim["address"]["text"]
    search = {"type": "ByBasicItems", "family_name": victim["name"]["family_name"], "given_name": victim["name"]["given_name"], "birth_date": ADULT.isoformat()}

    def ask(agency: str, affair: str, guess: str, *, provider: str | None = None) -> httpx.Response:
        response = query(network, agency, {**search, "affair": affair, "address_contains": guess}, provider=provider)
        assert response.status_code == 200, response.text
        return response

    # unprotected, the address criterion discriminates: this is the oracle the attack used
    right, wrong = _guesses(address)[-1]
    assert len(ask("mofa-passport", "passport-issuance", right).json()["persons"]) == 1
    assert ask("mofa-passport", "passport-issuance", wrong).json()["persons"] == []

    protect(network, db, CHIYODA, victim)
    pref_provider = "pref-13" if network.topology.network.prefecture_tier else "national"
    if network.topology.network.prefecture_tier:
        wait_until(lambda: marker(db, "pref_13", code) == (True, CHIYODA), what="marker at the prefecture server")

    for agency, affair, provider in (("mofa-passport", "passport-issuance", None), ("tokyo-police-license", "pref-driver-license", pref_provider)):
        reference = ask(agency, affair, address, provider=provider)
        [person] = reference.json()["persons"]
        assert person["protected"] is True and person["address"] is None
        learned = ""
        for right, wrong in _guesses(address):
            hit, miss = ask(agency, affair, right, provider=provider), ask(agency, affair, wrong, provider=provider)
            # byte for byte the same answer, apart from the ids of the provision records and the time
            assert hit.content == miss.content == reference.content, f"{affair}: {right!r} vs {wrong!r}"
            assert {k: v for k, v in hit.headers.items() if k not in PER_REQUEST} == {k: v for k, v in miss.headers.items() if k not in PER_REQUEST}
            assert hit.headers["x-provision-records"] and miss.headers["x-provision-records"], "every answer is recorded, right guess or wrong"
            if hit.content != miss.content:  # the attacker's step: keep the character that answered differently
                learned = right
        assert learned == "", "the attacker learned a prefix of the address"
        # a guess that is no part of any address answers the same too
        assert ask(agency, affair, "存在しない住所", provider=provider).content == reference.content

    # an affair that requires the address is given it, so its criterion discriminates as for anyone
    assert len(ask("pension-service", "pension-benefits", address).json()["persons"]) == 1
    assert ask("pension-service", "pension-benefits", _guesses(address)[-1][1]).json()["persons"] == []

    # a bulk job of the same guesses: every row answered the same
    lines = [json.dumps({**search, "address_contains": g}, ensure_ascii=False) for step in _guesses(address) for g in step]
    submitted = submit(network, "mofa-passport", "passport-issuance", lines)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    wait_completed(network, "mofa-passport", job_id)
    answers = {json.dumps({k: v for k, v in row.items() if k != "row"}, sort_keys=True) for row in result(network, "mofa-passport", job_id)}
    assert len(answers) == 1, answers
    [row] = [json.loads(a) for a in answers]
    assert row["status"] == "found" and row["persons"][0]["protected"] is True and "address" not in row["persons"][0]
