"""Staff login rules (services/municipal_rrs/staff.py) and the access table (services/municipal_rrs/access.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.municipal_rrs import staff
from services.municipal_rrs.access import ACCESS, rule_for
from services.municipal_rrs.staff import Role
from tests.register_routes import register_routes

NOW = datetime(2026, 12, 7, 12, 0, 10, tzinfo=UTC)
SECRET = staff.new_totp_secret()


def account(**overrides) -> staff.AccountState:
    values = {"active": True, "password_hash": staff.hash_password("correct horse battery"), "totp_secret": SECRET, "last_totp_step": 0,
              "failed_logins": 0, "locked_until": None}
    return staff.AccountState(**{**values, **overrides})


def test_every_route_of_the_register_has_an_access_rule():
    """A route added without a rule fails here (and is refused to everyone at run time)."""
    missing = [route for route in register_routes() if rule_for(*route) is None]
    assert not missing, f"routes without an access rule in services/municipal_rrs/access.py: {missing}"


def test_the_roles_are_nested_as_the_table_says():
    for key, rule in ACCESS.items():
        if Role.clerk in rule.roles:
            assert Role.supervisor in rule.roles, f"{key}: a supervisor does what a clerk does"
        if key[0] == "POST" and not rule.public and not rule.operator and key != ("POST", "/staff/logout"):
            assert Role.auditor not in rule.roles, f"{key}: an auditor only reads"
    supervised = {path for (method, path), rule in ACCESS.items() if rule.roles == {Role.supervisor}}
    assert {"/v1/residents/{resident_code}/removal", "/v1/residents/{resident_code}/restoration", "/v1/support-measures/{measure_id}/decision",
            "/v1/staff/accounts"} <= supervised


def test_a_good_login_takes_the_code_once():
    code = staff.totp_code(SECRET, NOW)
    step = staff.check_login(account(), password="correct horse battery", code=code, at=NOW)
    assert step == int(NOW.timestamp()) // 30
    with pytest.raises(staff.LoginRefused, match="used already"):
        staff.check_login(account(last_totp_step=step), password="correct horse battery", code=code, at=NOW)
    earlier = staff.totp_code(SECRET, NOW - timedelta(seconds=30))  # the previous code is still typed in time, but not after a newer one
    with pytest.raises(staff.LoginRefused, match="used already"):
        staff.check_login(account(last_totp_step=step), password="correct horse battery", code=earlier, at=NOW)
    later = staff.totp_code(SECRET, NOW + timedelta(seconds=30))
    assert staff.check_login(account(last_totp_step=step), password="correct horse battery", code=later, at=NOW + timedelta(seconds=30)) == step + 1


def test_a_wrong_factor_is_refused():
    good = staff.totp_code(SECRET, NOW)
    wrong_code = next(c for c in ("000000", "111111", "222222") if c not in {staff.totp_code(SECRET, NOW + timedelta(seconds=30 * d)) for d in (-1, 0, 1)})
    for password, code, why in [("wrong password here", good, "wrong password"), ("correct horse battery", wrong_code, "wrong TOTP"),
                                ("correct horse battery", "12ab56", "six digits")]:
        with pytest.raises(staff.LoginRefused, match=why):
            staff.check_login(account(), password=password, code=code, at=NOW)


def test_an_old_code_is_refused():
    old = staff.totp_code(SECRET, NOW - timedelta(minutes=5))
    with pytest.raises(staff.LoginRefused, match="wrong TOTP"):
        staff.check_login(account(), password="correct horse battery", code=old, at=NOW)


def test_unknown_deactivated_and_locked_accounts_are_refused():
    code = staff.totp_code(SECRET, NOW)
    with pytest.raises(staff.LoginRefused, match="no such account"):
        staff.check_login(None, password="x", code=code, at=NOW)
    with pytest.raises(staff.LoginRefused, match="deactivated"):
        staff.check_login(account(active=False), password="correct horse battery", code=code, at=NOW)
    with pytest.raises(staff.LoginRefused, match="locked"):
        staff.check_login(account(locked_until=NOW + timedelta(minutes=1)), password="correct horse battery", code=code, at=NOW)


def test_repeated_failures_lock_the_account_for_a_while():
    failed, locked = 0, None
    for _ in range(staff.MAX_FAILED_LOGINS - 1):
        failed, locked = staff.after_failure(failed, at=NOW)
        assert locked is None
    failed, locked = staff.after_failure(failed, at=NOW)
    assert failed == 0 and locked == NOW + timedelta(minutes=staff.LOCK_MINUTES)


def test_passwords_are_argon2id_and_long_enough():
    hashed = staff.hash_password("a long enough one")
    assert hashed.startswith("$argon2id$") and staff.password_matches(hashed, "a long enough one") and not staff.password_matches(hashed, "another")
    with pytest.raises(ValueError):
        staff.hash_password("short")


def test_the_otpauth_uri_enrols_an_authenticator():
    uri = staff.otpauth_uri(SECRET, username="tanaka", issuer="住民記録 rrs-131016")
    assert uri.startswith("otpauth://totp/") and f"secret={SECRET}" in uri and "period=30" in uri and "digits=6" in uri


def test_every_refused_login_hashes_the_password_once_so_its_time_tells_nothing(monkeypatch):
    """An attacker timing logins learns neither which usernames exist nor which accounts are locked or deactivated."""
    hashed = []
    real = staff.password_matches
    monkeypatch.setattr(staff, "password_matches", lambda stored, password: hashed.append(stored) or real(stored, password))
    code = staff.totp_code(SECRET, NOW)
    for refused in (None, account(active=False), account(locked_until=NOW + timedelta(minutes=1)), account()):
        hashed.clear()
        with pytest.raises(staff.LoginRefused):
            staff.check_login(refused, password="a wrong password", code=code, at=NOW)
        assert len(hashed) == 1, refused
