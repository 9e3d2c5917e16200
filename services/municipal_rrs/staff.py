"""Rules of staff login at the register: roles, passwords, the second factor (no I/O).

A member of staff proves two things: something known (a password, kept as an
argon2id hash) and something held (the TOTP authenticator enrolled with the
account, RFC 6238: six digits, 30-second steps, SHA-1 as every authenticator
app implements it). Why TOTP and not client certificates: docs/security-staff.md.
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from contracts.staff import USERNAME_PATTERN
from contracts.staff import StaffRole as Role  # clerk; supervisor (DV decisions, 職権消除・回復, accounts); auditor (reads only)

TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
TOTP_DRIFT_STEPS = 1  # a code from the step before or after is taken too (clocks and typing take time)
MAX_FAILED_LOGINS = 5  # then the account waits LOCK_MINUTES: a password or a code cannot be guessed online
LOCK_MINUTES = 15
MIN_PASSWORD_LENGTH = 12
USERNAME = re.compile(USERNAME_PATTERN)

#: argon2id (the library's default type) with RFC 9106's second recommended parameter set: 64 MiB, 3 passes
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)


class LoginRefused(Exception):
    """The login did not succeed; the reason is recorded, the caller hears only that it failed."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a staff password has at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    """160 random bits (RFC 4226's recommended length), base32 as authenticator apps take it."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def new_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, 120 bits


def _totp(secret: str) -> TOTP:
    padded = secret + "=" * (-len(secret) % 8)
    return TOTP(base64.b32decode(padded), TOTP_DIGITS, SHA1(), TOTP_STEP_SECONDS, enforce_key_length=False)


def totp_code(secret: str, at: datetime) -> str:
    """The code an authenticator shows at ``at`` (the operator CLI prints it for the demo accounts)."""
    return _totp(secret).generate(int(at.timestamp())).decode()


def otpauth_uri(secret: str, *, username: str, issuer: str) -> str:
    """What the authenticator app scans (Key Uri Format): printed once when the account is made."""
    return _totp(secret).get_provisioning_uri(f"{issuer}:{username}", issuer)


def accepted_totp_step(secret: str, code: str, *, at: datetime, last_step: int) -> int:
    """The step ``code`` belongs to, if it is valid now and newer than the last code taken; else ``LoginRefused``.

    Only steps after ``last_step`` count, so each code is taken at most once,
    and an older code is refused after a newer one was used.
    """
    if not re.fullmatch(r"\d{%d}" % TOTP_DIGITS, code or ""):
        raise LoginRefused("the TOTP code is not six digits")
    now_step = int(at.timestamp()) // TOTP_STEP_SECONDS
    totp = _totp(secret)
    for step in range(now_step - TOTP_DRIFT_STEPS, now_step + TOTP_DRIFT_STEPS + 1):
        try:
            totp.verify(code.encode(), step * TOTP_STEP_SECONDS)
        except InvalidToken:
            continue
        if step <= last_step:
            raise LoginRefused("the TOTP code was used already")
        return step
    raise LoginRefused("wrong TOTP code")


@dataclass(frozen=True)
class AccountState:
    """What a login attempt needs from the account row."""

    active: bool
    password_hash: str
    totp_secret: str
    last_totp_step: int
    failed_logins: int
    locked_until: datetime | None


def check_login(account: AccountState | None, *, password: str, code: str, at: datetime) -> int:
    """The TOTP step taken by a successful login; ``LoginRefused`` with the reason otherwise.

    The password is hashed first, whatever the account (against a dummy hash
    for an unknown one), so the time taken tells neither which usernames exist
    nor which accounts are locked or deactivated.
    """
    password_right = password_matches(account.password_hash if account is not None else _dummy_hash(), password)
    if account is None:
        raise LoginRefused("no such account")
    if not account.active:
        raise LoginRefused("the account is deactivated")
    if account.locked_until is not None and account.locked_until > at:
        raise LoginRefused("the account is locked after repeated failures")
    if not password_right:
        raise LoginRefused("wrong password")
    return accepted_totp_step(account.totp_secret, code, at=at, last_step=account.last_totp_step)


def after_failure(failed_logins: int, *, at: datetime) -> tuple[int, datetime | None]:
    """(failed logins, locked until) after one more failure: the count starts again once it locked the account."""
    failed = failed_logins + 1
    if failed >= MAX_FAILED_LOGINS:
        return 0, at + timedelta(minutes=LOCK_MINUTES)
    return failed, None


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class StaffMember:
    """The authenticated member of staff behind one request: recorded with every change, refusal and read."""

    username: str
    role: Role
    session_id: str  # the screen session or the API token's id: what one login did can be told apart
