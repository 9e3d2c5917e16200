"""Staff login at the register and who may use which route (issue 17, "Staff log in").

The role × route table is generated from the app's own routes
(``tests/register_routes.py``): every route refuses a caller without a
credential, and every role the access table does not name for it. A route
added later is in the table by construction; one without an access rule fails
``tests/unit/test_staff_rules.py`` and is refused to everyone at run time.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, date, datetime

import httpx
import pytest

from services.municipal_rrs.access import rule_for
from services.municipal_rrs.staff import TOTP_STEP_SECONDS, Role, totp_code
from tests.e2e.helpers import birth_body, register
from tests.register_routes import register_routes

CHIYODA = "131016"
ROUTES = register_routes(CHIYODA)
SAMPLE = {"resident_code": "00000000000", "code": "00000000000", "registration_number": "1", "sequence": "1", "name": "staff.css",
          "username": "nobody-here", "action": "decision", "path": "x"}


def concrete(path: str) -> str:
    """The path with a value for each parameter (a UUID for the ids): enough to reach the access check."""
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: SAMPLE.get(m.group(1), str(uuid.UUID(int=1))), path)


def rrs(network) -> str:
    return network.url(f"municipal_rrs.{CHIYODA}")


def screen_session(network, username: str, role: str) -> tuple[httpx.Client, str]:
    """A browser-like client logged in on the screens as ``username`` (enrolled with ``role``), and its CSRF token."""
    account = network.staff.ensure(CHIYODA, username, role)
    client = httpx.Client(base_url=rrs(network), timeout=20, follow_redirects=False)
    signed = client.post("/staff/login", data={"username": username, "password": account["password"], "totp": network.staff.fresh_code(CHIYODA, username),
                                               "next": "/staff"}, headers={"origin": rrs(network)})
    assert signed.status_code == 303 and signed.headers["location"] == "/staff", signed.text
    page = client.get("/staff")
    assert page.status_code == 200, page.text
    return client, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


@pytest.fixture(scope="module")
def screens(network):
    sessions = {role: screen_session(network, f"screens-{role}", role) for role in Role}
    yield sessions
    for client, _ in sessions.values():
        client.close()


def test_every_api_route_refuses_a_caller_without_credentials_and_every_role_it_does_not_name(network):
    base = rrs(network)
    tokens = {role: network.staff_headers(CHIYODA, role.value) for role in Role}
    checked = 0
    with httpx.Client(base_url=base, timeout=20) as client:
        for method, path in ROUTES:
            rule = rule_for(method, path)
            if path == "/staff" or path.startswith("/staff/") or rule.public:
                continue
            url = concrete(path)
            anonymous = client.request(method, url)
            assert anonymous.status_code == 401, (method, path, anonymous.status_code, anonymous.text)
            assert anonymous.headers["content-type"].startswith("application/problem+json")
            for role, headers in tokens.items():
                answer = client.request(method, url, headers=headers)
                if rule.operator:  # a staff token is not the operator's
                    assert answer.status_code == 401, (method, path, role, answer.status_code)
                elif role in rule.roles:
                    assert answer.status_code not in (401, 403), (method, path, role, answer.status_code, answer.text)
                else:
                    assert answer.status_code == 403, (method, path, role, answer.status_code, answer.text)
            checked += 1
    assert checked > 50


def test_every_screen_sends_an_anonymous_caller_to_the_login_and_refuses_the_roles_it_does_not_name(network, screens):
    checked = 0
    with httpx.Client(base_url=rrs(network), timeout=20, follow_redirects=False) as anonymous:
        for method, path in ROUTES:
            rule = rule_for(method, path)
            if not (path == "/staff" or path.startswith("/staff/")) or rule.public:
                continue
            url = concrete(path)
            answer = anonymous.request(method, url, headers={"origin": rrs(network)})
            assert answer.status_code == 303 and answer.headers["location"].startswith("/staff/login"), (method, path, answer.status_code)
            for role, (client, csrf) in screens.items():
                if role in rule.roles or path == "/staff/logout":
                    continue
                data = {"csrf": csrf} if method == "POST" else None
                refused = client.request(method, url, data=data, headers={"origin": rrs(network)})
                assert refused.status_code == 403 and "権限" in refused.text, (method, path, role, refused.status_code)
            checked += 1
    assert checked > 30


def test_a_token_names_who_logged_in_and_what_they_may_do(network):
    me = httpx.get(f"{rrs(network)}/v1/staff/me", headers=network.staff_headers(CHIYODA, "auditor"), timeout=10)
    assert me.status_code == 200 and me.json() == {"username": "auditor", "role": "auditor"}
    other = httpx.get(f"{network.url('municipal_rrs.131130')}/v1/staff/me", headers=network.staff_headers(CHIYODA, "auditor"), timeout=10)
    assert other.status_code == 401, "a token of one register is not accepted by another"
    assert httpx.get(f"{rrs(network)}/v1/staff/me", headers={"X-Staff-Id": "clerk"}, timeout=10).status_code == 401, "nobody names themselves"


def test_login_refuses_a_wrong_password_a_wrong_code_and_a_replayed_code(network, db):
    username = f"login-{uuid.uuid4().hex[:6]}"
    account = network.staff.ensure(CHIYODA, username, "clerk")
    url = f"{rrs(network)}/v1/staff/token"

    def login(password: str, code: str) -> httpx.Response:
        return httpx.post(url, json={"username": username, "password": password, "totp": code}, timeout=20)

    step = int(time.time()) // TOTP_STEP_SECONDS
    if time.time() % TOTP_STEP_SECONDS > TOTP_STEP_SECONDS - 5:  # keep the replay within one step
        time.sleep(6)
        step += 1
    code = totp_code(account["totp_secret"], datetime.fromtimestamp(step * TOTP_STEP_SECONDS, UTC))
    wrong_password = login("not the password at all", code)
    assert wrong_password.status_code == 401 and wrong_password.json()["type"].endswith("/login-refused")
    wrong_code = login(account["password"], f"{(int(code) + 1) % 1_000_000:06d}")
    assert wrong_code.status_code == 401 and wrong_code.json()["detail"] == wrong_password.json()["detail"], "the caller is not told which factor failed"
    good = login(account["password"], code)
    assert good.status_code == 200, good.text
    assert good.json()["expires_in"] <= 600 and good.json()["role"] == "clerk"
    replayed = login(account["password"], code)
    assert replayed.status_code == 401, "a TOTP code is taken once, even within its step"
    reasons = [r[0] for r in db(f"rrs_{CHIYODA}").rows("select detail from refusals where reason = 'login-refused' and caller = %s order by id", (username,))]
    assert [r.split(": ", 1)[1] for r in reasons] == ["wrong password", "wrong TOTP code", "the TOTP code was used already"]
    unknown = httpx.post(url, json={"username": "nobody-at-all", "password": "whatever it is", "totp": code}, timeout=20)
    assert unknown.status_code == 401 and unknown.json()["detail"] == wrong_password.json()["detail"]


def test_screens_need_the_csrf_token_on_every_post_and_logout_ends_the_session(network):
    client, csrf = screen_session(network, f"csrf-{uuid.uuid4().hex[:6]}", "clerk")
    try:
        origin = {"origin": rrs(network)}
        missing = client.post("/staff/seals", data={"holder_resident_code": "00000000000"}, headers=origin)
        assert missing.status_code == 403 and "不正な送信" in missing.text
        wrong = client.post("/staff/seals", data={"csrf": "x" * 40}, headers=origin)
        assert wrong.status_code == 403
        forged = client.post("/staff/seals", data={"csrf": csrf}, headers={"origin": "https://elsewhere.example"})
        assert forged.status_code == 403 and "別のサイト" in forged.text
        cookie = client.cookies.get("jukinet_staff")
        assert client.post("/staff/logout", data={}, headers=origin).status_code == 403, "logout is a POST like any other"
        out = client.post("/staff/logout", data={"csrf": csrf}, headers=origin)
        assert out.status_code == 303 and out.headers["location"] == "/staff/login"
        # the old cookie opens nothing any more: the session row has ended
        with httpx.Client(base_url=rrs(network), timeout=20, follow_redirects=False, cookies={"jukinet_staff": cookie}) as kept:
            assert kept.get("/staff").status_code == 303
    finally:
        client.close()


def test_the_cookie_is_httponly_and_samesite_strict(network):
    username = f"cookie-{uuid.uuid4().hex[:6]}"
    account = network.staff.ensure(CHIYODA, username, "auditor")
    signed = httpx.post(f"{rrs(network)}/staff/login", data={"username": username, "password": account["password"],
                                                             "totp": network.staff.fresh_code(CHIYODA, username)}, headers={"origin": rrs(network)}, timeout=20)
    cookie = signed.headers["set-cookie"].lower()
    assert signed.status_code == 303 and "httponly" in cookie and "samesite=strict" in cookie and "path=/staff" in cookie


def test_every_read_of_a_record_is_recorded_with_who_read_it(network, db):
    person = register(network, CHIYODA)
    code = person["resident_code"]
    auditor = network.staff_headers(CHIYODA, "auditor")
    assert httpx.get(f"{rrs(network)}/v1/residents/{code}", headers=auditor, timeout=10).status_code == 200
    found = httpx.get(f"{rrs(network)}/v1/residents", params={"name": person["name"]["family_name"], "birth_date": person["birth_date"]}, headers=auditor, timeout=10)
    assert code in [r["resident_code"] for r in found.json()["residents"]]
    reads = httpx.get(f"{rrs(network)}/v1/record-reads", params={"resident_code": code}, headers=auditor, timeout=10).json()
    assert {(r["read_by"], r["route"]) for r in reads} >= {("auditor", "GET /v1/residents/{resident_code}"), ("auditor", "GET /v1/residents")}
    assert db(f"rrs_{CHIYODA}").value("select count(*) from record_reads where resident_code = %s and read_by = 'auditor'", (code,)) >= 2
    history = httpx.get(f"{rrs(network)}/v1/residents/{code}/history", headers=auditor, timeout=10).json()
    assert history[0]["recorded_by"] == "clerk", "the change is recorded with the clerk who logged in"


def test_a_portal_credential_needs_a_recorded_identity_check(network):
    person = register(network, CHIYODA)
    code = person["resident_code"]
    url = f"{rrs(network)}/v1/residents/{code}/portal-credential"
    clerk = network.staff_headers(CHIYODA, "clerk")
    assert httpx.post(url, headers=clerk, timeout=10).status_code == 422
    assert httpx.post(url, json={"identity_check": {"method": "passport"}}, headers=clerk, timeout=10).status_code == 422, "which passport: its last four"
    assert httpx.post(url, json={"identity_check": {"method": "mynumber_card", "document_number_last4": "1234"}},
                      headers=network.staff_headers(CHIYODA, "auditor"), timeout=10).status_code == 403
    issued = httpx.post(url, json={"identity_check": {"method": "driving_licence", "document_number_last4": "5678"}}, headers=clerk, timeout=10)
    assert issued.status_code == 200 and issued.json()["resident_code"] == code, issued.text
    [kept] = httpx.get(f"{rrs(network)}/v1/portal-credential-issues", params={"resident_code": code}, headers=network.staff_headers(CHIYODA, "auditor"), timeout=10).json()
    assert (kept["issued_by"], kept["method"], kept["document_number_last4"]) == ("clerk", "driving_licence", "5678")


def test_ex_officio_removal_is_a_supervisors_and_a_supervisor_manages_accounts(network):
    person = register(network, CHIYODA, birth_body(CHIYODA))
    url = f"{rrs(network)}/v1/residents/{person['resident_code']}/removal"
    body = {"removal_date": date.today().isoformat(), "explanation": "居住の実態がない"}
    assert httpx.post(url, json=body, headers=network.staff_headers(CHIYODA, "clerk"), timeout=10).status_code == 403
    removed = httpx.post(url, json=body, headers=network.staff_headers(CHIYODA, "supervisor"), timeout=10)
    assert removed.status_code == 200 and removed.json()["status"] == "removed", removed.text

    supervisor = network.staff_headers(CHIYODA, "supervisor")
    username = f"new-{uuid.uuid4().hex[:6]}"
    created = httpx.post(f"{rrs(network)}/v1/staff/accounts", json={"username": username, "role": "clerk"}, headers=supervisor, timeout=20)
    assert created.status_code == 201 and created.json()["password"] and created.json()["otpauth_uri"].startswith("otpauth://totp/"), created.text
    assert httpx.post(f"{rrs(network)}/v1/staff/accounts", json={"username": "clerk", "role": "supervisor", "replace": True},
                      headers=supervisor, timeout=20).status_code == 403, "only the operator re-enrols an account"
    token = httpx.post(f"{rrs(network)}/v1/staff/token", timeout=20, json={
        "username": username, "password": created.json()["password"], "totp": totp_code(created.json()["totp_secret"], datetime.now(UTC))})
    assert token.status_code == 200, token.text
    gone = httpx.post(f"{rrs(network)}/v1/staff/accounts/{username}/deactivation", headers=supervisor, timeout=10)
    assert gone.status_code == 200 and gone.json()["active"] is False


def test_the_operator_enrols_staff_with_the_cli(network):
    from typer.testing import CliRunner

    from services.cli import app

    runner = CliRunner()
    username = f"cli-{uuid.uuid4().hex[:6]}"
    added = runner.invoke(app, ["staff", "add", "--municipality", CHIYODA, "--username", username, "--role", "auditor", "--data", str(network.root)])
    assert added.exit_code == 0, added.output
    assert "password:" in added.output and "TOTP secret:" in added.output and "otpauth://totp/" in added.output
    again = runner.invoke(app, ["staff", "add", "--municipality", CHIYODA, "--username", username, "--role", "auditor", "--data", str(network.root)])
    assert again.exit_code == 1 and "409" in again.output, "an existing account is re-enrolled only with --replace"
    code = runner.invoke(app, ["staff", "code", "--municipality", CHIYODA, "--username", "clerk", "--data", str(network.root)])
    assert code.exit_code == 0 and re.fullmatch(r"\d{6}\n", code.output), code.output
