"""Staff accounts, screen sessions, the access log and identity checks in the register's own database (SQL only, never commits)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.municipal_rrs import staff
from services.municipal_rrs.models import PortalCredentialIssueRow, RecordReadRow, StaffAccountRow, StaffSessionRow


class AccountExists(Exception):
    """An account with that username exists already (and ``replace`` was not asked)."""


async def create_account(session: AsyncSession, *, username: str, role: staff.Role, password: str, created_by: str, replace: bool = False) -> str:
    """A new account with a fresh TOTP secret (returned: it is shown once). ``replace`` gives an existing account a new
    password, secret and role and ends its screen sessions (what an operator does when a device is lost)."""
    secret = staff.new_totp_secret()
    password_hash = staff.hash_password(password)
    row = await session.get(StaffAccountRow, username, with_for_update=True)
    if row is not None and not replace:
        raise AccountExists(username)
    if row is None:
        session.add(StaffAccountRow(username=username, role=role.value, password_hash=password_hash, totp_secret=secret, last_totp_step=0,
                                    failed_logins=0, active=True, created_by=created_by))
    else:
        row.role, row.password_hash, row.totp_secret, row.last_totp_step = role.value, password_hash, secret, 0
        row.failed_logins, row.locked_until, row.active, row.deactivated_at, row.deactivated_by = 0, None, True, None, None
        await end_sessions_of(session, username, at=datetime.now().astimezone())
    await session.flush()
    return secret


async def deactivate(session: AsyncSession, username: str, *, by: str, at: datetime) -> bool:
    row = await session.get(StaffAccountRow, username, with_for_update=True)
    if row is None:
        return False
    row.active, row.deactivated_by, row.deactivated_at = False, by, at
    await end_sessions_of(session, username, at=at)
    return True


async def accounts(session: AsyncSession) -> list[StaffAccountRow]:
    return list((await session.execute(select(StaffAccountRow).order_by(StaffAccountRow.username))).scalars())


async def login(session: AsyncSession, *, username: str, password: str, code: str, at: datetime) -> tuple[StaffAccountRow | None, str | None]:
    """(the account, None) after a good login, else (None, why): the failure is counted in the same transaction, so commit either way."""
    row = await session.get(StaffAccountRow, username, with_for_update=True) if staff.USERNAME.match(username or "") else None
    state = None if row is None else staff.AccountState(
        active=row.active, password_hash=row.password_hash, totp_secret=row.totp_secret, last_totp_step=row.last_totp_step,
        failed_logins=row.failed_logins, locked_until=row.locked_until,
    )
    try:
        step = staff.check_login(state, password=password, code=code, at=at)
    except staff.LoginRefused as refused:
        if row is not None and row.active and not (row.locked_until and row.locked_until > at):
            row.failed_logins, locked_until = staff.after_failure(row.failed_logins, at=at)
            row.locked_until = locked_until or row.locked_until
        return None, str(refused)
    row.last_totp_step, row.failed_logins, row.locked_until = step, 0, None
    return row, None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(session: AsyncSession, account: StaffAccountRow, *, at: datetime, lifetime: timedelta) -> tuple[str, StaffSessionRow]:
    """(cookie value, row): only the cookie's digest is kept, so the table does not hold usable sessions."""
    token = secrets.token_urlsafe(32)
    row = StaffSessionRow(id=uuid.uuid4(), token_hash=_digest(token), username=account.username, role=account.role,
                          csrf=secrets.token_urlsafe(32), expires_at=at + lifetime)
    session.add(row)
    await session.flush()
    return token, row


async def session_by_cookie(session: AsyncSession, token: str, *, at: datetime) -> StaffSessionRow | None:
    """The live session of this cookie, if its account is still active."""
    found = (await session.execute(
        select(StaffSessionRow).join(StaffAccountRow, StaffAccountRow.username == StaffSessionRow.username).where(
            StaffSessionRow.token_hash == _digest(token), StaffSessionRow.ended_at.is_(None), StaffSessionRow.expires_at > at,
            StaffAccountRow.active.is_(True),
        )
    )).scalar_one_or_none()
    return found


async def end_session(session: AsyncSession, session_id: uuid.UUID, *, at: datetime) -> None:
    await session.execute(update(StaffSessionRow).where(StaffSessionRow.id == session_id, StaffSessionRow.ended_at.is_(None)).values(ended_at=at))


async def end_sessions_of(session: AsyncSession, username: str, *, at: datetime) -> None:
    await session.execute(update(StaffSessionRow).where(StaffSessionRow.username == username, StaffSessionRow.ended_at.is_(None)).values(ended_at=at))


async def record_reads(session: AsyncSession, *, read_by: str, resident_codes: Iterable[str], route: str) -> None:
    """One row per record read: who, which resident, through which route (the time is the database's)."""
    session.add_all([RecordReadRow(resident_code=code[:11], read_by=read_by, route=route[:200]) for code in dict.fromkeys(resident_codes)])


async def reads(session: AsyncSession, *, resident_code: str | None = None, read_by: str | None = None, limit: int = 500) -> list[RecordReadRow]:
    stmt = select(RecordReadRow).order_by(RecordReadRow.id.desc()).limit(limit)
    if resident_code:
        stmt = stmt.where(RecordReadRow.resident_code == resident_code)
    if read_by:
        stmt = stmt.where(RecordReadRow.read_by == read_by)
    return list((await session.execute(stmt)).scalars())


async def record_credential_issue(session: AsyncSession, *, resident_code: str, issued_by: str, expires_at: datetime, method: str,
                                  document_number_last4: str | None, note: str | None) -> PortalCredentialIssueRow:
    row = PortalCredentialIssueRow(id=uuid.uuid4(), resident_code=resident_code, issued_by=issued_by, expires_at=expires_at, check_method=method,
                                   document_number_last4=document_number_last4, note=note)
    session.add(row)
    await session.flush()
    return row
