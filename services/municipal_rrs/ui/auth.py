"""Who is at the counter on the staff screens: a server-side session opened by a real login.

The clerk logs in with username, password and the current TOTP code (the
same account and rules as ``POST /v1/staff/token``; docs/security-staff.md).
The cookie holds only a random session key (HttpOnly, SameSite=Strict, path
``/staff``); the register keeps its SHA-256 in ``staff_sessions`` with the
session's CSRF token, so a logout or a deactivated account ends the session at
once. Every form carries the CSRF token and every POST must also come from the
register's own pages (Origin check), so another site cannot make a clerk's
browser act. Acknowledgements of support-measure alerts are bound to the
session id, so logging out and in again asks for them again.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

COOKIE = "jukinet_staff"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 8 * 3600  # one working day at the counter
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send "Origin: null" on form posts
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class StaffSession:
    """The clerk of a screen request: who (``staff_id``, the username), which login session, which role, and the form token."""

    staff_id: str
    session_id: str
    role: str = "clerk"
    csrf: str = ""


class StaffScreenRefused(Exception):
    """A screen the request may not see now; ``response`` says so (the login page, or a refused form)."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


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
