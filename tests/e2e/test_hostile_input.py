"""No input makes a 500 (issue 18): every hostile request is answered 4xx with a problem document and
recorded as a refusal (NUL and control characters escaped), and no bad message stops an outbox.
Tokens that live too long, name two audiences or have no id are refused the same way, recorded with the
issuer they claim marked unverified (issue 17)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import jwt
import psycopg
import pytest

from services.common.tokens import load_private_key
from tests.conftest import wait_until
from tests.e2e.helpers import register

RRS = "municipal_rrs.131016"
CS = "cs_gateway.131016"
NATIONAL = "national_server.national"
PROVLOG = "provision_log.provision_log"
DATABASE = {RRS: "rrs_131016", CS: "cs_131016", NATIONAL: "national", PROVLOG: "provlog"}


def _refusals(db, node: str) -> int:
    return db(DATABASE[node]).value("select count(*) from refusals")


def _last_refusal(db, node: str) -> tuple:
    return db(DATABASE[node]).rows("select reason, caller, path, detail from refusals order by id desc limit 1")[0]


def _refused(network, db, node: str, send, *, status: int | tuple[int, ...] = (400, 422)) -> tuple[httpx.Response, tuple]:
    """Send, then check: a 4xx problem document without a raw control character, and one refusal row more."""
    before = _refusals(db, node)
    response = send(network.url(node))
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, f"{response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == response.status_code and problem["title"]
    assert "\x00" not in json.dumps(problem, ensure_ascii=False) and "\\u0000" not in response.text, "no raw NUL echoed"
    wait_until(lambda: _refusals(db, node) == before + 1, timeout=10, what=f"a refusal recorded at {node}")
    return response, _last_refusal(db, node)


def _agency_token(network, agency: str = "pension-service", **claims) -> str:
    """A token the agency signs, with claims as given (None drops one)."""
    now = int(time.time())
    payload = {"iss": f"agency-{agency}", "sub": f"agency-{agency}", "aud": "national", "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())} | claims
    key = load_private_key(network.private_keys / f"agency-{agency}.key")
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm="EdDSA")


def _national_query(token: str):
    return lambda url: httpx.post(f"{url}/v1/persons/query", json={"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": "12345678903"},
                                  headers={"authorization": f"Bearer {token}"}, timeout=10)


# --- tokens (issue 17) -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("label", "claims", "why"), [
    ("a 24-hour token", {"exp": int(time.time()) + 24 * 3600}, "lifetime"),
    ("two audiences", {"aud": ["pref-13", "national"]}, "audience"),
    ("no token id", {"jti": None}, "jti"),
])
def test_a_token_too_long_with_two_audiences_or_without_id_is_refused_and_recorded_as_unverified(network, db, label, claims, why):
    token = _agency_token(network, **claims)
    response, (reason, caller, _, detail) = _refused(network, db, NATIONAL, _national_query(token), status=401)
    assert response.json()["type"].endswith("/unauthorized"), label
    assert reason == "unauthorized" and caller == "unverified:agency-pension-service", (label, caller)
    assert why in detail, (label, detail)


def test_a_nul_in_the_claimed_issuer_is_refused_recorded_escaped(network, db):
    token = _agency_token(network, iss="agency-pension\x00service")
    _, (reason, caller, _, detail) = _refused(network, db, NATIONAL, _national_query(token), status=401)
    assert reason == "unauthorized" and caller == "unverified:agency-pension\\x00service"
    assert "\\x00" in detail


def test_the_same_service_token_is_taken_again_within_its_lifetime(network):
    """Reuse within a token's short life is accepted by decision (docs/security-tokens.md)."""
    token = _agency_token(network)
    answers = [_national_query(token)(network.url(NATIONAL)).status_code for _ in range(3)]
    assert 401 not in answers and 500 not in answers, answers


def test_tenant_roles_cannot_use_the_shared_databases(network):
    for name, cred in network.credentials.items():
        for shared in ("postgres", "template1"):
            with pytest.raises(psycopg.OperationalError, match="permission denied|not have CONNECT"):
                psycopg.connect(host=network.postgres.host, port=network.postgres.port, user=cred.role, password=cred.password, dbname=shared).close()
    cred = network.credentials["national"]
    with psycopg.connect(host=network.postgres.host, port=network.postgres.port, user=cred.role, password=cred.password, dbname=cred.database, autocommit=True) as conn:
        conn.execute("create temporary table scratch (x int)")  # its own database: allowed
        rows = conn.execute("select datname from pg_database where has_database_privilege(current_user, datname, 'TEMPORARY') order by 1").fetchall()
        assert [r[0] for r in rows] == ["national"], rows
        rows = conn.execute("select datname from pg_database where datallowconn and has_database_privilege(current_user, datname, 'CONNECT') order by 1").fetchall()
        assert [r[0] for r in rows] == ["national"], rows


# --- no input makes a 500 (issue 18) ------------------------------------------------------------------------

def test_a_nul_in_a_key_of_a_seal_registration_is_not_echoed(network, db):
    body = '{"holder_resident_code": "12345678903", "impression": "x", "registered_on": "2026-11-01", "\\u0000evil": 1}'
    _, (reason, _, _, detail) = _refused(network, db, RRS, lambda url: httpx.post(
        f"{url}/v1/seal-registrations", content=body, headers={"content-type": "application/json", **network.staff_headers("131016")}, timeout=10), status=422)
    assert reason == "invalid-request" and "\\x00evil" in detail


@pytest.mark.parametrize(("label", "path"), [
    ("a NUL in a search", "/v1/residents?name=%00"),
    ("a control character in a resident code", "/v1/residents/x%0b/assurance"),
    ("a resident code that is not one", "/v1/residents/x/assurance"),
    ("a NUL in a resident code", "/v1/residents/1234567890%00"),
    ("a seal registration number past 64 bits", "/v1/seal-registrations/99999999999999999999"),
])
def test_hostile_paths_at_the_register(network, db, label, path):
    _, (_, _, recorded_path, _) = _refused(network, db, RRS, lambda url: httpx.get(f"{url}{path}", headers=network.staff_headers("131016"), timeout=10))
    assert "\x00" not in recorded_path and "\x0b" not in recorded_path, label


def test_a_cursor_past_64_bits_at_the_national_server(network, db):
    token = network.agency_token("pension-service", audience="national")
    _refused(network, db, NATIONAL, lambda url: httpx.get(f"{url}/v1/notifications", params={"after": "99999999999999999999999"},
                                                          headers={"authorization": f"Bearer {token}"}, timeout=10), status=422)


def test_a_tree_size_past_64_bits_at_the_provision_log(network, db):
    _refused(network, db, PROVLOG, lambda url: httpx.get(f"{url}/v1/log/checkpoints/99999999999999999999", timeout=10), status=422)
    for params in ({"size": "99999999999999999999"}, {"size": "1", "start": "99999999999999999999"}):  # the auditor's proofs, paged
        _refused(network, db, PROVLOG, lambda url, params=params: httpx.get(f"{url}/v1/log/proofs", params=params, timeout=10), status=422)


def _signed_by(network, party: str, audience: str) -> str:
    from services.common.tokens import sign_token

    return sign_token(load_private_key(network.private_keys / f"{party}.key"), issuer=party, audience=audience)


def _composition(members: list[str]) -> dict:
    return {"kind": "household-composition/v1", "household_id": str(uuid.uuid4()), "municipality_code": "131016",
            "members": [{"resident_code": code, "relationship": "世帯主" if i == 0 else "子"} for i, code in enumerate(members)],
            "recorded_at": datetime.now(UTC).isoformat()}


def test_a_composition_listing_a_member_twice_is_refused_by_the_cs(network, db):
    person = register(network, "131016")
    twice = _composition([person["resident_code"], person["resident_code"]])
    headers = {"authorization": f"Bearer {_signed_by(network, 'rrs-131016', 'cs-131016')}"}
    _, (reason, _, _, detail) = _refused(network, db, CS, lambda url: httpx.post(f"{url}/v1/rrs/household-compositions", json=twice, headers=headers, timeout=10), status=422)
    assert reason == "invalid-request" and "more than once" in detail
    batch = {"messages": [{"traceparent": None, "message": twice}]}
    _refused(network, db, CS, lambda url: httpx.post(f"{url}/v1/rrs/batches", json=batch, headers=headers, timeout=10), status=422)


def test_a_refused_message_is_set_aside_and_the_outbox_flows_on(network, db):
    """A composition the CS refuses, put in the register's outbox as a faulty register version would: it is set
    aside with the reason, and what the register writes after it still reaches the CS."""
    person = register(network, "131016")
    code = person["resident_code"]
    rrs = db("rrs_131016")
    with rrs.connect() as conn:
        bad_id = conn.execute(
            "insert into outbox (destination, key, kind, payload, attempts) values (%s, %s, %s, %s, 0) returning id",
            ("http:cs_gateway.131016", code, "household-composition", json.dumps(_composition([code, code]), ensure_ascii=False)),
        ).fetchone()[0]
    after = register(network, "131016")  # a change written after the bad row
    wait_until(lambda: db("cs_131016").value("select count(*) from identity where resident_code = %s", (after["resident_code"],)) == 1,
               timeout=60, what="the change after the refused row at the CS")
    refused_at, last_error, sent_at = rrs.rows("select refused_at, last_error, sent_at from outbox where id = %s", (bad_id,))[0]
    assert refused_at is not None and sent_at is None, (refused_at, last_error, sent_at)
    assert last_error.startswith("refused (422)") and "more than once" in last_error
    metrics = httpx.get(f"{network.url(RRS)}/metrics", timeout=10).text
    assert 'channel="outbox"' in metrics
