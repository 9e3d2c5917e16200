"""What does not fit is refused with a clear reason, recorded, and goes no further."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from contracts import topics
from services.common.tokens import load_private_key, sign_token
from tests.conftest import wait_until
from tests.e2e.helpers import has_prefecture_tier, prefecture_node, produce, query, register


def _rrs_token(network, municipality: str, audience: str | None = None) -> str:
    key = load_private_key(network.private_keys / f"rrs-{municipality}.key")
    return sign_token(key, issuer=f"rrs-{municipality}", audience=audience or f"cs-{municipality}")


def test_unauthorised_affair_is_refused_recorded_and_nothing_leaves(network, db):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: db("national").value("select count(*) from identity where resident_code = %s", (code,)) == 1, what="birth at national")
    before = db("national").value("select count(*) from refusals where reason = 'affair-not-authorised'")

    refused = query(network, "mofa-passport", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"].endswith("/affair-not-authorised") and "persons" not in problem
    assert person["name"]["family_name"] not in refused.text

    assert db("national").value("select count(*) from refusals where reason = 'affair-not-authorised'") == before + 1
    assert db("national").value("select caller from refusals where reason = 'affair-not-authorised' order by id desc limit 1") == "agency-mofa-passport"
    assert db("national").value("select count(*) from outbox where key = %s and kind = 'provision-record'", (code,)) == 0

    # fields beyond the affair are refused too, and an unsigned or foreign-signed call is not even considered
    wider = query(network, "mofa-passport", {"type": "ByResidentCode", "affair": "passport-issuance", "resident_code": code, "fields": ["individual_number"]})
    assert wider.status_code == 403 and wider.json()["type"].endswith("/fields-not-authorised")
    forged = sign_token(load_private_key(network.private_keys / "agency-mofa-passport.key"), issuer="agency-pension-service", audience="national")
    bad_signature = httpx.post(f"{network.url('national_server.national')}/v1/persons/query", json={"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code}, headers={"authorization": f"Bearer {forged}"})
    assert bad_signature.status_code == 401
    assert db("national").value("select count(*) from outbox where key = %s and kind = 'provision-record'", (code,)) == 0


def _change(resident_code: str, municipality: str = "131016", **overrides) -> dict:
    body = {
        "kind": "identity-change/v1", "event_id": str(uuid.uuid4()), "resident_code": resident_code, "version": 1,
        "municipality_code": municipality, "reason": "birth", "change_date": "2026-11-01", "status": "active",
        "identity": {
            "resident_code": resident_code, "individual_number": "621498320257",
            "name": {"family_name": "検証", "given_name": "花子", "family_name_kana": "ケンショウ", "given_name_kana": "ハナコ"},
            "birth_date": "2026-11-01", "sex": "female",
            "address": {"municipality_code": municipality, "text": "東京都千代田区千代田1-1"},
        },
        "recorded_at": datetime.now(UTC).isoformat(),
    }
    body.update(overrides)
    return body


VALID_CODE = "12345678903"


@pytest.mark.parametrize(
    ("label", "payload", "slug"),
    [
        ("unknown field", lambda: {**_change(VALID_CODE), "household_id": "x"}, "invalid-request"),
        ("unknown message kind", lambda: _change(VALID_CODE, kind="dv-notice/v1"), "invalid-request"),
        ("wrong type", lambda: _change(VALID_CODE, version="1"), "invalid-request"),
        ("bad check digit", lambda: _change("12345678901"), "invalid-request"),
        ("characters outside the set", lambda: {**_change(VALID_CODE), "identity": {**_change(VALID_CODE)["identity"], "name": {"family_name": "検証\u0007"}}}, "invalid-request"),
        ("oversize string", lambda: {**_change(VALID_CODE), "identity": {**_change(VALID_CODE)["identity"], "address": {"municipality_code": "131016", "text": "東" * 500}}}, "invalid-request"),
        ("another municipality", lambda: _change(VALID_CODE, municipality="131130"), "wrong-municipality"),
    ],
)
def test_malformed_messages_at_the_cs_are_refused_and_do_not_propagate(network, db, label, payload, slug):
    cs = network.url("cs_gateway.131016")
    before = db("cs_131016").value("select count(*) from refusals")
    response = httpx.post(f"{cs}/v1/rrs/identity-changes", content=json.dumps(payload(), ensure_ascii=False), headers={"content-type": "application/json", "authorization": f"Bearer {_rrs_token(network, '131016')}"})
    assert response.status_code == 422, f"{label}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/" + slug) and problem["status"] == 422 and problem["title"]
    assert db("cs_131016").value("select count(*) from refusals") == before + 1
    assert db("cs_131016").value("select count(*) from identity where resident_code = %s", (VALID_CODE,)) == 0
    assert db("cs_131016").value("select count(*) from outbox where key = %s", (VALID_CODE,)) == 0


def test_cs_refuses_unknown_routes_and_callers_other_than_its_own_rrs(network, db):
    cs = network.url("cs_gateway.131016")
    before = db("cs_131016").value("select count(*) from refusals")
    unknown = httpx.post(f"{cs}/v1/anything", json={"a": 1})
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("application/problem+json")
    foreign = httpx.post(f"{cs}/v1/rrs/identity-changes", json=_change(VALID_CODE), headers={"authorization": f"Bearer {_rrs_token(network, '131130', audience='cs-131016')}"})
    assert foreign.status_code == 401
    counts = httpx.get(f"{cs}/internal/v1/refusals").json()
    assert counts.get("not-found", 0) >= 1 and counts.get("unauthorized", 0) >= 1
    assert db("cs_131016").value("select count(*) from refusals") == before + 2


def test_malformed_kafka_records_go_to_the_dead_letter_topic_with_the_reason(network, db):
    # the consumer above 東京都's CSs: its prefecture server, or the national server without that tier
    receiver = prefecture_node(network, "13").database
    topic = topics.prefecture_identity("13") if has_prefecture_tier(network) else topics.NATIONAL_IDENTITY
    # a valid change its signer may not send: another prefecture's municipality, or one outside the network
    foreign = "272035" if has_prefecture_tier(network) else "011002"
    why = f"cs-131016 may not send a change of municipality {foreign}"
    before = db(receiver).value("select count(*) from dead_letters")
    signed = {"signed_as": "cs-131016", "kind": "identity-change"}  # by the CS that produces there: the contents are what is wrong
    produce(network, topic, key=VALID_CODE, value=b'{"kind": "identity-change/v1", "municipality_code": "131016", "oops": true}', **signed)
    produce(network, topic, key=VALID_CODE, value=json.dumps(_change(VALID_CODE, municipality=foreign)).encode(), **signed)
    wait_until(lambda: db(receiver).value("select count(*) from dead_letters") >= before + 2, what=f"two dead letters at {receiver}")
    reasons = [r[0] for r in db(receiver).rows("select reason from dead_letters order by id desc limit 2")]
    assert any("ValidationError" in r for r in reasons)
    assert any(why in r for r in reasons), reasons
    assert db(receiver).value("select count(*) from identity where resident_code = %s", (VALID_CODE,)) == 0
    assert db("national").value("select count(*) from identity where resident_code = %s", (VALID_CODE,)) == 0


def test_each_tenant_role_reaches_only_its_own_database(network):
    names = sorted(network.credentials)
    for own in names:
        cred = network.credentials[own]
        for other in names:
            if other == own:
                continue
            with pytest.raises(psycopg.OperationalError, match="permission denied|not have CONNECT"):
                psycopg.connect(host=network.postgres.host, port=network.postgres.port, user=cred.role, password=cred.password, dbname=other).close()
    # no trust authentication: a wrong or missing password is refused
    with pytest.raises(psycopg.OperationalError, match="password authentication failed|no password"):
        psycopg.connect(host=network.postgres.host, port=network.postgres.port, user="national", password="wrong", dbname="national").close()
