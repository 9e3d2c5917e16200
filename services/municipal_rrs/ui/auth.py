"""Who is at the counter: a staff id in a cookie signed with the register's own key.

There is no password here on purpose: a municipality puts the screens behind
its own sign-on (LGWAN, IC card readers) and this layer only needs to know
*which* clerk acts, to record it. The cookie holds a short token (EdDSA,
audience ``rrs-staff-ui``, 12 hours at most) with the staff id and a fresh
session id; acknowledgements of support-measure alerts are bound to that
session id, so logging out and in again asks for them again. The cookie is
HttpOnly and SameSite=Strict, and every POST must come from the register's
own pages (Origin check), so another site cannot make a clerk's browser act.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from fastapi import Request

from services.common.runtime import Runtime
from services.common.tokens import TokenRefused

COOKIE = "jukinet_staff"
AUDIENCE = "rrs-staff-ui"
SESSION_SECONDS = 12 * 3600
STAFF_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class StaffSession:
    staff_id: str
    session_id: str


def issue(rt: Runtime, staff_id: str) -> tuple[str, StaffSession]:
    who = StaffSession(staff_id=staff_id, session_id=uuid.uuid4().hex)
    token = rt.token_for(AUDIENCE, subject=staff_id, lifetime_seconds=SESSION_SECONDS, claims={"scope": "staff-session", "sid": who.session_id})
    return token, who


def current(rt: Runtime, request: Request) -> StaffSession | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        verified = rt.keys.verify(token, audience=AUDIENCE, allowed_issuers=lambda party: party == rt.party, longer_lived={"staff-session": SESSION_SECONDS})
    except TokenRefused:
        return None
    sid = verified.claims.get("sid")
    if verified.claims.get("scope") != "staff-session" or not isinstance(sid, str) or not STAFF_ID.match(verified.subject):
        return None
    return StaffSession(staff_id=verified.subject, session_id=sid)


def same_origin(request: Request) -> bool:
    """A form post from the register's own pages: Sec-Fetch-Site where the browser sends it, else Origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # no Origin: not a browser form post from another site
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host
