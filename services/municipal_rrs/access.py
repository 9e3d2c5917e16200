"""Who may use which route of the register: the one table, and the dependency that applies it to every route.

Every route of the app is a key of :data:`ACCESS` (method, path template). The
app installs :func:`authorize` as an app-wide dependency, so a route added
later and forgotten here is refused to everyone (fail closed), and the test
generated from ``app.routes`` (tests/e2e/test_staff_access.py) fails.

Credentials: the JSON API takes a bearer token from ``POST /v1/staff/token``
(EdDSA, signed by this register's own key, audience this register's party,
10 minutes); the screens under ``/staff`` take the session cookie of
``/staff/login`` and, on every POST, the session's CSRF token. Either way the
request then carries a :class:`~services.municipal_rrs.staff.StaffMember`
(``request.state.staff``) and ``request.state.caller`` is its username, which
the refusal recorder and ``StaffDep`` use: nobody acts as "counter" any more.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from contracts.identifiers import is_valid_resident_code

from services.common.problems import ProblemError
from services.common.tokens import TokenRefused
from services.municipal_rrs import staff_store
from services.municipal_rrs.staff import Role, StaffMember
from services.municipal_rrs.ui.auth import COOKIE, CSRF_FIELD, SECURITY_HEADERS, StaffScreenRefused, same_origin
from services.municipal_rrs.ui.forms import read_form

API_TOKEN_SCOPE = "staff-api"
API_TOKEN_SECONDS = 600  # a stolen token is worth ten minutes; clients log in again (password and a fresh TOTP code)


@dataclass(frozen=True)
class Rule:
    """``roles``: who may call it (empty: nobody needs to be signed in); ``reads``: the path parameter naming the
    resident whose record the route shows (a read is recorded); ``operator``: the route checks an operator token itself."""

    roles: frozenset[Role] = frozenset()
    reads: str | None = None
    operator: bool = False

    @property
    def public(self) -> bool:
        return not self.roles and not self.operator


ANYONE = Rule()  # login, health, the API description, the stylesheet
OPERATOR = Rule(operator=True)  # the operator's own tokens (services/cli.py), checked by the route
_READ = frozenset({Role.clerk, Role.supervisor, Role.auditor})
_WRITE = frozenset({Role.clerk, Role.supervisor})
_SUPERVISE = frozenset({Role.supervisor})
_AUDIT = frozenset({Role.supervisor, Role.auditor})

READ, WRITE, SUPERVISE, AUDIT = Rule(_READ), Rule(_WRITE), Rule(_SUPERVISE), Rule(_AUDIT)


def reads(param: str) -> Rule:
    return Rule(_READ, reads=param)


#: (method, path template) → who may call it. HEAD is checked as GET.
ACCESS: dict[tuple[str, str], Rule] = {
    # the process itself and the API description
    ("GET", "/health"): ANYONE, ("GET", "/ready"): ANYONE, ("GET", "/metrics"): ANYONE,
    ("GET", "/openapi.json"): ANYONE, ("GET", "/docs"): ANYONE, ("GET", "/docs/oauth2-redirect"): ANYONE, ("GET", "/redoc"): ANYONE,
    ("POST", "/internal/v1/operator/outbox/replay"): OPERATOR,
    ("POST", "/internal/v1/operator/reconcile"): OPERATOR,
    ("POST", "/internal/v1/operator/staff-accounts"): OPERATOR,
    # staff accounts and the access log
    ("POST", "/v1/staff/token"): ANYONE,
    ("GET", "/v1/staff/me"): READ,
    ("GET", "/v1/staff/accounts"): SUPERVISE,
    ("POST", "/v1/staff/accounts"): SUPERVISE,
    ("POST", "/v1/staff/accounts/{username}/deactivation"): SUPERVISE,
    ("GET", "/v1/record-reads"): AUDIT,
    ("GET", "/v1/portal-credential-issues"): AUDIT,
    # the register
    ("POST", "/v1/residents"): WRITE,
    ("GET", "/v1/residents"): READ,
    ("GET", "/v1/residents/{resident_code}"): reads("resident_code"),
    ("GET", "/v1/residents/{resident_code}/history"): reads("resident_code"),
    ("POST", "/v1/residents/{resident_code}/death"): WRITE,
    ("POST", "/v1/residents/{resident_code}/move-within"): WRITE,
    ("POST", "/v1/residents/{resident_code}/name-change"): WRITE,
    ("POST", "/v1/residents/{resident_code}/corrections"): WRITE,
    ("POST", "/v1/residents/{resident_code}/removal"): SUPERVISE,  # 職権消除
    ("POST", "/v1/residents/{resident_code}/restoration"): SUPERVISE,  # 職権回復
    ("POST", "/v1/residents/{resident_code}/household"): WRITE,
    ("POST", "/v1/move-outs"): WRITE,
    ("POST", "/v1/residents/{resident_code}/move-out/cancellation"): WRITE,
    ("POST", "/v1/move-ins"): WRITE,
    ("POST", "/v1/move-ins/from-abroad"): WRITE,
    ("GET", "/v1/move-reservations"): READ,
    ("GET", "/v1/notices"): READ,
    ("GET", "/v1/move-in-reviews"): READ,
    ("GET", "/v1/online-filings"): READ,
    ("POST", "/v1/online-filings/{filing_id}/residence-confirmed"): WRITE,
    ("GET", "/v1/letters"): READ,
    ("GET", "/v1/households/{household_id}"): READ,
    ("POST", "/v1/residents/{resident_code}/portal-credential"): WRITE,
    # JPKI at the counter
    ("POST", "/v1/residents/{resident_code}/jpki-certificates"): WRITE,
    ("POST", "/v1/residents/{resident_code}/identity-checks"): WRITE,
    ("GET", "/v1/residents/{resident_code}/assurance"): reads("resident_code"),
    # DV等支援措置: the counter takes applications; a supervisor decides, extends, ends, and reviews refused requests
    ("POST", "/v1/support-measures"): WRITE,
    ("POST", "/v1/support-measures/{measure_id}/decision"): SUPERVISE,
    ("POST", "/v1/support-measures/{measure_id}/extension"): SUPERVISE,
    ("POST", "/v1/support-measures/{measure_id}/cancellation"): SUPERVISE,
    ("GET", "/v1/support-measures"): READ,
    ("GET", "/v1/support-measures/{measure_id}"): READ,
    ("GET", "/v1/support-measures/{measure_id}/deliveries"): READ,
    ("GET", "/v1/residents/{resident_code}/support-measures"): reads("resident_code"),
    ("GET", "/v1/support-measure-alerts"): READ,
    ("POST", "/v1/support-measure-alerts/{alert_id}/acknowledgement"): WRITE,
    ("POST", "/v1/certificate-requests"): WRITE,
    ("GET", "/v1/certificate-requests/{request_id}"): READ,
    ("GET", "/v1/certificate-requests/{request_id}/outcome"): READ,
    ("GET", "/v1/certificate-review-queue"): READ,
    ("POST", "/v1/certificate-review-queue/{request_id}/decision"): SUPERVISE,
    ("GET", "/v1/residents/{resident_code}/certificate-requests"): reads("resident_code"),
    # 住登外者 and 印鑑登録
    ("POST", "/v1/non-residents"): WRITE,
    ("GET", "/v1/non-residents"): READ,
    ("GET", "/v1/non-residents/{non_resident_id}"): READ,
    ("GET", "/v1/non-residents/{non_resident_id}/link-candidates"): READ,
    ("POST", "/v1/non-residents/{non_resident_id}/link"): WRITE,
    ("POST", "/v1/seal-registrations"): WRITE,
    ("GET", "/v1/seal-registrations"): READ,
    ("GET", "/v1/seal-registrations/{registration_number}"): READ,
    ("POST", "/v1/seal-registrations/{registration_number}/abolition"): WRITE,
    # the counter staff screens
    ("GET", "/staff/login"): ANYONE,
    ("POST", "/staff/login"): ANYONE,
    ("GET", "/staff/assets/{name}"): ANYONE,
    ("GET", "/staff/{path:path}"): ANYONE, ("POST", "/staff/{path:path}"): ANYONE,  # only without the DV backend: every screen says 503
    ("POST", "/staff/logout"): READ,
    ("GET", "/staff"): READ,
    ("GET", "/staff/residents/{code}"): reads("code"),
    ("POST", "/staff/residents/{code}/acknowledgement"): WRITE,
    ("GET", "/staff/births/new"): WRITE,
    ("POST", "/staff/births/new"): WRITE,
    ("GET", "/staff/residents/{code}/death"): Rule(_WRITE, reads="code"),
    ("POST", "/staff/residents/{code}/death"): WRITE,
    ("GET", "/staff/residents/{code}/move-within"): Rule(_WRITE, reads="code"),
    ("POST", "/staff/residents/{code}/move-within"): WRITE,
    ("GET", "/staff/residents/{code}/correction"): Rule(_WRITE, reads="code"),
    ("POST", "/staff/residents/{code}/correction"): WRITE,
    ("GET", "/staff/residents/{code}/move-out"): Rule(_WRITE, reads="code"),
    ("POST", "/staff/residents/{code}/move-out"): WRITE,
    ("GET", "/staff/move-ins"): READ,
    ("POST", "/staff/move-ins"): WRITE,
    ("GET", "/staff/notices"): READ,
    ("POST", "/staff/notices/{sequence}/acknowledgement"): WRITE,
    ("GET", "/staff/residents/{code}/certificate"): Rule(_WRITE, reads="code"),
    ("POST", "/staff/residents/{code}/certificate"): WRITE,
    ("GET", "/staff/certificates/{request_id}"): READ,
    ("GET", "/staff/certificate-reviews"): READ,
    ("POST", "/staff/certificate-reviews/{request_id}"): SUPERVISE,
    ("GET", "/staff/measures"): READ,
    ("POST", "/staff/measures"): WRITE,
    ("POST", "/staff/measures/{measure_id}/{action}"): SUPERVISE,  # decision, extension, cancellation
    ("POST", "/staff/measure-alerts/{alert_id}/acknowledgement"): WRITE,
    ("GET", "/staff/non-residents"): READ,
    ("POST", "/staff/non-residents"): WRITE,
    ("GET", "/staff/non-residents/{non_resident_id}"): READ,
    ("POST", "/staff/non-residents/{non_resident_id}/link"): WRITE,
    ("GET", "/staff/seals"): READ,
    ("POST", "/staff/seals"): WRITE,
    ("POST", "/staff/seals/{registration_number}/abolition"): WRITE,
}


def rule_for(method: str, path: str) -> Rule | None:
    return ACCESS.get(("GET" if method == "HEAD" else method, path))


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or request.url.path


def _runtime(request: Request):
    return request.app.state.runtime


async def authorize(request: Request) -> None:
    """The app-wide dependency: the route's rule from :data:`ACCESS`, the caller's credential, the role, and the read record."""
    path = _route_path(request)
    rule = rule_for(request.method, path)
    screen = path == "/staff" or path.startswith("/staff/")
    if rule is None:  # a route nobody classified: nobody may use it
        if screen:
            raise StaffScreenRefused(_page(403, "この画面の利用権限が定められていません。"))
        raise ProblemError(403, "forbidden", "The route has no access rule", f"{request.method} {path} is not in the register's access table")
    if rule.public or rule.operator:
        return
    member = await (_screen_member(request) if screen else _api_member(request))
    request.state.staff = member
    request.state.caller = member.username
    if member.role not in rule.roles:
        if screen:
            raise StaffScreenRefused(_page(403, "この操作を行う権限がありません。"))
        raise ProblemError(403, "forbidden", "Your role may not use this route",
                           f"{member.username} is {member.role.value}; {request.method} {path} needs {' or '.join(sorted(r.value for r in rule.roles))}")
    if rule.reads and (code := request.path_params.get(rule.reads)) and is_valid_resident_code(code):
        await record_reads(request, [code])  # a path that names no resident (the route refuses it) reads no record


async def record_reads(request: Request, resident_codes: list[str]) -> None:
    """The access log: who read which resident's record through which route (in its own transaction, before the answer)."""
    if not resident_codes:
        return
    member: StaffMember = request.state.staff
    async with _runtime(request).sessions() as session, session.begin():
        await staff_store.record_reads(session, read_by=member.username, resident_codes=resident_codes, route=f"{request.method} {_route_path(request)}")


def staff_token(rt, member_username: str, role: Role) -> tuple[str, int]:
    """(bearer token, seconds valid) for the JSON API: signed by this register for itself."""
    token = rt.token_for(rt.party, subject=member_username, lifetime_seconds=API_TOKEN_SECONDS,
                         claims={"scope": API_TOKEN_SCOPE, "role": role.value, "sid": uuid.uuid4().hex})
    return token, API_TOKEN_SECONDS


async def _api_member(request: Request) -> StaffMember:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise ProblemError(401, "unauthorized", "Staff log in first", "POST /v1/staff/token with username, password and TOTP code, then send the token as a bearer token")
    rt = _runtime(request)
    try:
        verified = rt.keys.verify(header[7:].strip(), audience=rt.party, allowed_issuers=lambda party: party == rt.party)
    except TokenRefused as exc:
        raise ProblemError(401, "unauthorized", "The token was refused", str(exc)) from None
    role, sid = verified.claims.get("role"), verified.claims.get("sid")
    if verified.claims.get("scope") != API_TOKEN_SCOPE or role not in Role.__members__ or not isinstance(sid, str):
        raise ProblemError(401, "unauthorized", "The token was refused", "not a staff token of this register")
    return StaffMember(username=verified.subject, role=Role(role), session_id=sid)


async def _screen_member(request: Request) -> StaffMember:
    rt = _runtime(request)
    cookie = request.cookies.get(COOKIE)
    row = None
    if cookie:
        async with rt.sessions() as session:
            row = await staff_store.session_by_cookie(session, cookie, at=datetime.now(UTC))
    if row is None:
        target = request.url.path if request.method == "GET" else "/staff"
        raise StaffScreenRefused(RedirectResponse(f"/staff/login?next={target}", status_code=303, headers=SECURITY_HEADERS))
    request.state.caller = row.username
    if request.method == "POST":
        if not same_origin(request):
            raise StaffScreenRefused(_page(403, "別のサイトからの送信は受け付けません。"))
        sent = (await read_form(request)).get(CSRF_FIELD) or request.headers.get("x-csrf-token") or ""
        if not secrets.compare_digest(sent.encode(), row.csrf.encode()):
            raise StaffScreenRefused(_page(403, "画面の有効期限が切れたか、不正な送信です。画面を開き直してください。"))
    request.state.csrf = row.csrf
    return StaffMember(username=row.username, role=Role(row.role), session_id=str(row.id))


def _page(status: int, message: str) -> HTMLResponse:
    html = f"<!doctype html><html lang=\"ja\"><meta charset=\"utf-8\"><title>利用できません</title><h1>利用できません</h1><p>{message}</p><p><a href=\"/staff\">戻る</a></p>"
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
