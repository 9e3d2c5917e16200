"""Staff logins of a local network, for those who call the registers as staff: the test suite, the demo
population, benchmarks, the operator trying curl.

The launcher (:class:`services.network.Network`) enrols one account per role in
every municipality at start (through the operator route each register has)
and keeps their passwords and TOTP secrets in ``<data>/staff.json`` (0600),
next to the private keys: on a real deployment a person holds these, here the
machine does. Callers log in like anyone else — ``POST /v1/staff/token`` with
the password and the current TOTP code — and reuse the token until shortly
before it lapses. A TOTP code is taken once, so a second login within the same
30 seconds waits for the next code.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from services.common.runtime import OPERATOR_PARTY
from services.common.tokens import load_private_key, sign_token
from services.municipal_rrs.staff import TOTP_STEP_SECONDS, totp_code

ROLES = ("clerk", "supervisor", "auditor")
REUSE_SECONDS = 300  # a token of ten minutes is used for five, then a new login


class StaffLogins:
    """Accounts and tokens of one local network. ``register_url(code)`` is the register of a municipality."""

    def __init__(self, data: Path, register_url):
        self.path = data / "staff.json"
        self.private_keys = data / "keys" / "private"
        self.register_url = register_url
        self._lock = threading.RLock()
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._last_step: dict[tuple[str, str], int] = {}

    # --- accounts ---------------------------------------------------------------------------------------------
    def _accounts(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def _keep(self, accounts: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(accounts, out, indent=2, sort_keys=True)

    def account(self, municipality: str, username: str) -> dict | None:
        """{"role", "password", "totp_secret"} of an account this network enrolled."""
        return self._accounts().get(municipality, {}).get(username)

    def enrol(self, municipality: str, username: str, role: str) -> dict:
        """Make (or re-make: new password and secret) the account at the register, through its operator route."""
        key = load_private_key(self.private_keys / f"{OPERATOR_PARTY}.key")
        token = sign_token(key, issuer=OPERATOR_PARTY, audience=f"rrs-{municipality}", lifetime_seconds=60)
        response = httpx.post(f"{self.register_url(municipality)}/internal/v1/operator/staff-accounts",
                              json={"username": username, "role": role, "replace": True}, headers={"authorization": f"Bearer {token}"}, timeout=30.0)
        if response.status_code != 201:
            raise RuntimeError(f"enrolling {username} at {municipality}: {response.status_code} {response.text[:300]}")
        created = response.json()
        entry = {"role": role, "password": created["password"], "totp_secret": created["totp_secret"]}
        with self._lock:
            accounts = self._accounts()
            accounts.setdefault(municipality, {})[username] = entry
            self._keep(accounts)
            self._tokens.pop((municipality, username), None)
            self._last_step.pop((municipality, username), None)
        return entry

    def ensure(self, municipality: str, username: str, role: str) -> dict:
        """The account, enrolled now unless this network enrolled it before with that role."""
        known = self.account(municipality, username)
        if known is not None and known["role"] == role:
            return known
        return self.enrol(municipality, username, role)

    def enrol_roles(self, municipalities) -> None:
        """One account per role (username = the role) in every municipality, unless enrolled before."""
        for municipality in municipalities:
            for role in ROLES:
                self.ensure(municipality, role, role)

    # --- logging in ---------------------------------------------------------------------------------------------
    def code(self, municipality: str, username: str) -> str:
        """The current TOTP code of an account enrolled here (what the authenticator app would show)."""
        account = self.account(municipality, username)
        if account is None:
            raise KeyError(f"no account {username} enrolled for {municipality} in {self.path}")
        return totp_code(account["totp_secret"], datetime.now(UTC))

    def fresh_code(self, municipality: str, username: str, secret: str | None = None) -> str:
        """A code of a step not used by this process yet (waits for the next step if needed): what a person does
        who logs in twice within 30 seconds."""
        secret = secret or self.account(municipality, username)["totp_secret"]
        while True:
            step = int(time.time()) // TOTP_STEP_SECONDS
            if step > self._last_step.get((municipality, username), 0):
                self._last_step[(municipality, username)] = step
                return totp_code(secret, datetime.fromtimestamp(step * TOTP_STEP_SECONDS, UTC))
            time.sleep((step + 1) * TOTP_STEP_SECONDS - time.time() + 0.05)

    def login(self, municipality: str, username: str) -> str:
        """A new bearer token: password and a fresh TOTP code. Another process may have taken the current
        code (the operator's CLI and the launcher share accounts): then the next code; an account the register
        lost (a wiped database) is enrolled again."""
        for attempt in range(3):
            account = self.account(municipality, username)
            if account is None:
                raise KeyError(f"no account {username} enrolled for {municipality} in {self.path}")
            body = {"username": username, "password": account["password"], "totp": self.fresh_code(municipality, username, account["totp_secret"])}
            response = httpx.post(f"{self.register_url(municipality)}/v1/staff/token", json=body, timeout=30.0)
            if response.status_code == 200:
                return response.json()["access_token"]
            if response.status_code != 401:
                raise RuntimeError(f"login of {username} at {municipality}: {response.status_code} {response.text[:300]}")
            if attempt == 1:
                self.enrol(municipality, username, account["role"])
        raise RuntimeError(f"login of {username} at {municipality} refused: {response.text[:300]}")

    def token(self, municipality: str, role: str = "clerk", *, username: str | None = None) -> str:
        """A bearer token of the role's account (or of ``username``, enrolled with that role on first use), reused for a while."""
        username = username or role
        with self._lock:
            kept = self._tokens.get((municipality, username))
            if kept is not None and time.monotonic() < kept[1]:
                return kept[0]
            self.ensure(municipality, username, role)
            token = self.login(municipality, username)
            self._tokens[(municipality, username)] = (token, time.monotonic() + REUSE_SECONDS)
            return token

    def headers(self, municipality: str, role: str = "clerk", *, username: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(municipality, role, username=username)}"}

    def auth(self, municipality_at, role: str = "clerk", *, username: str | None = None) -> "StaffAuth":
        """An ``httpx.Auth`` logging in at whichever register a request goes to (``municipality_at(url)``)."""
        return StaffAuth(self, municipality_at, role, username)


class StaffAuth(httpx.Auth):
    """Adds the bearer token of a member of staff of the register the request is sent to: one object serves calls
    to every municipality's register, and a call to any other node fails loudly instead of going without a credential."""

    def __init__(self, logins: StaffLogins, municipality_at, role: str, username: str | None):
        self.logins, self.municipality_at, self.role, self.username = logins, municipality_at, role, username

    def auth_flow(self, request: httpx.Request):
        municipality = self.municipality_at(request.url)
        if municipality is None:
            raise ValueError(f"{request.url} is not a municipal register: no staff credential for it")
        request.headers["authorization"] = f"Bearer {self.logins.token(municipality, self.role, username=self.username)}"
        yield request
