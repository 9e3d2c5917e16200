"""HTTP edge of staff login and staff accounts at the register.

``POST /v1/staff/token`` is the JSON API's login: username, password and the
current TOTP code give a bearer token of ten minutes, signed by this
register's own key for itself (no other party accepts it). A supervisor
manages the municipality's accounts; the operator makes the first ones
(``services.cli staff add``) through an operator-signed route. Why TOTP and
stateless tokens: docs/security-staff.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from contracts.register import PortalCredentialIssue

from contracts.staff import RecordRead, StaffAccount, StaffAccountCreated, StaffAccountRequest, StaffMe, StaffToken, StaffTokenRequest
from services.common.auth import bearer_verifier
from services.common.problems import ProblemError, problem_response
from services.common.runtime import OPERATOR_PARTY
from services.municipal_rrs import access, staff, staff_store
from services.municipal_rrs.models import PortalCredentialIssueRow

router = APIRouter(tags=["staff"])


def _rt(request: Request):
    return request.app.state.runtime


async def _operator(request: Request) -> None:
    rt = _rt(request)
    await bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party == OPERATOR_PARTY)(request)


def _member(request: Request) -> staff.StaffMember:
    return request.state.staff


@router.post("/v1/staff/token", response_model=StaffToken, responses={401: {"description": "Login refused (problem document)"}})
async def token(body: StaffTokenRequest, request: Request):
    """Log in for the JSON API. Every failure is the same 401 for the caller (it does not tell which usernames exist
    or which factor was wrong); the refusal record says why."""
    rt = _rt(request)
    request.state.caller = body.username[:64] or None
    async with rt.sessions() as session, session.begin():
        account, why = await staff_store.login(session, username=body.username, password=body.password, code=body.totp.strip(), at=datetime.now(UTC))
    if account is None:
        await request.app.state.record_refusal(request, "login-refused", f"{body.username[:64]}: {why}")
        return problem_response(request, 401, "login-refused", "Login refused",
                                "username, password or TOTP code not accepted (a TOTP code is taken once; wait for the next one)")
    role = staff.Role(account.role)
    signed, seconds = access.staff_token(rt, account.username, role)
    return StaffToken(access_token=signed, expires_in=seconds, username=account.username, role=role)


@router.get("/v1/staff/me", response_model=StaffMe)
async def me(request: Request) -> StaffMe:
    """Who the credential names (clients check their token with it)."""
    member = _member(request)
    return StaffMe(username=member.username, role=member.role)


async def _create(request: Request, body: StaffAccountRequest, *, created_by: str) -> StaffAccountCreated:
    rt = _rt(request)
    password = body.password or staff.new_password()
    try:
        async with rt.sessions() as session, session.begin():
            secret = await staff_store.create_account(session, username=body.username, role=staff.Role(body.role), password=password,
                                                      created_by=created_by, replace=body.replace)
    except staff_store.AccountExists:
        raise ProblemError(409, "account-exists", "A staff account with that username exists", body.username) from None
    issuer = f"住民記録 {rt.party}"
    return StaffAccountCreated(username=body.username, role=body.role, password=None if body.password else password, totp_secret=secret,
                               otpauth_uri=staff.otpauth_uri(secret, username=body.username, issuer=issuer))


@router.post("/internal/v1/operator/staff-accounts", status_code=201, response_model=StaffAccountCreated, dependencies=[Depends(_operator)])
async def operator_creates_account(body: StaffAccountRequest, request: Request) -> StaffAccountCreated:
    """Operator: the first accounts of a municipality, or re-enrolment of one whose authenticator was lost (``replace``)."""
    return await _create(request, body, created_by=OPERATOR_PARTY)


@router.post("/v1/staff/accounts", status_code=201, response_model=StaffAccountCreated)
async def supervisor_creates_account(body: StaffAccountRequest, request: Request) -> StaffAccountCreated:
    """Supervisor: a new colleague. Replacing an account is the operator's (a supervisor cannot take over a colleague's login)."""
    if body.replace:
        raise ProblemError(403, "forbidden", "Only the operator re-enrols an existing account")
    return await _create(request, body, created_by=_member(request).username)


@router.get("/v1/staff/accounts", response_model=list[StaffAccount])
async def list_accounts(request: Request) -> list[StaffAccount]:
    async with _rt(request).sessions() as session:
        rows = await staff_store.accounts(session)
    return [StaffAccount(username=r.username, role=r.role, active=r.active, created_by=r.created_by, created_at=r.created_at, locked_until=r.locked_until)
            for r in rows]


@router.post("/v1/staff/accounts/{username}/deactivation", response_model=StaffAccount)
async def deactivate(username: str, request: Request) -> StaffAccount:
    """A colleague leaves: no new login, screen sessions end now; an API token already issued lapses within ten minutes."""
    member = _member(request)
    if username == member.username:
        raise ProblemError(409, "own-account", "A supervisor does not deactivate their own account")
    async with _rt(request).sessions() as session, session.begin():
        if not await staff_store.deactivate(session, username, by=member.username, at=datetime.now(UTC)):
            raise ProblemError(404, "not-found", "No such staff account")
        rows = [r for r in await staff_store.accounts(session) if r.username == username]
    r = rows[0]
    return StaffAccount(username=r.username, role=r.role, active=r.active, created_by=r.created_by, created_at=r.created_at, locked_until=r.locked_until)


@router.get("/v1/record-reads", response_model=list[RecordRead])
async def record_reads(request: Request, resident_code: Annotated[str | None, Query(max_length=11)] = None,
                       read_by: Annotated[str | None, Query(max_length=64)] = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[RecordRead]:
    """The access log, newest first: who read a resident's record (for the auditor, and for the resident's own request)."""
    async with _rt(request).sessions() as session:
        rows = await staff_store.reads(session, resident_code=resident_code, read_by=read_by, limit=limit)
    return [RecordRead(resident_code=r.resident_code, read_by=r.read_by, read_at=r.read_at, route=r.route) for r in rows]


@router.get("/v1/portal-credential-issues", response_model=list[PortalCredentialIssue])
async def credential_issues(request: Request, resident_code: Annotated[str | None, Query(max_length=11)] = None,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[PortalCredentialIssue]:
    """Portal credentials handed over, newest first: who issued each, and how the resident's identity was checked."""
    stmt = select(PortalCredentialIssueRow).order_by(PortalCredentialIssueRow.issued_at.desc()).limit(limit)
    if resident_code:
        stmt = stmt.where(PortalCredentialIssueRow.resident_code == resident_code)
    async with _rt(request).sessions() as session:
        rows = (await session.execute(stmt)).scalars().all()
    return [PortalCredentialIssue(issue_id=r.id, resident_code=r.resident_code, issued_by=r.issued_by, issued_at=r.issued_at, expires_at=r.expires_at,
                                  method=r.check_method, document_number_last4=r.document_number_last4, note=r.note) for r in rows]
