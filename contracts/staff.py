"""Staff accounts and login at a municipal register (JSON API; the screens use the same accounts)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from contracts.base import Contract
from contracts.identifiers import ResidentCode

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"


class StaffRole(StrEnum):
    """What a member of staff may do; which route needs which role is decided in services/municipal_rrs/access.py alone."""

    clerk = "clerk"  # the counter: registrations, moves, certificates, portal credentials
    supervisor = "supervisor"  # what a clerk does, and DV decisions, ex-officio removal and restoration, staff accounts
    auditor = "auditor"  # reads only: records, the access log, credential issues


class StaffTokenRequest(Contract):
    """A login: something known (the password) and something held (the current TOTP code of the enrolled authenticator)."""

    username: str = Field(max_length=64)
    password: str = Field(max_length=200)
    totp: str = Field(max_length=6)


class StaffToken(Contract):
    """A bearer token for this register's JSON API (RFC 6750), valid ``expires_in`` seconds."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    username: str
    role: StaffRole


class StaffAccountRequest(Contract):
    """A new account; without ``password`` one is generated and shown once. ``replace`` re-enrols an existing account
    (new password, new TOTP secret, its sessions ended): only the operator may ask that."""

    username: str = Field(pattern=USERNAME_PATTERN)
    role: StaffRole
    password: str | None = Field(default=None, min_length=12, max_length=200)
    replace: bool = False


class StaffAccountCreated(Contract):
    """Shown once: the TOTP secret is enrolled in the authenticator app (``otpauth_uri`` as a QR code) and not shown again."""

    username: str
    role: StaffRole
    password: str | None  # only when the register generated it
    totp_secret: str
    otpauth_uri: str


class StaffAccount(Contract):
    username: str
    role: StaffRole
    active: bool
    created_by: str
    created_at: datetime
    locked_until: datetime | None


class StaffMe(Contract):
    username: str
    role: StaffRole


class RecordRead(Contract):
    """One line of the access log: who read which resident's record, when, through which route."""

    resident_code: ResidentCode
    read_by: str
    read_at: datetime
    route: str
