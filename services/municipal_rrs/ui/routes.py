"""Routes of the counter staff screens (窓口業務画面), served by the register under ``/staff``.

Server-rendered HTML in Japanese, like the resident portal of the provision
log: Jinja2 templates, one stylesheet, a few lines of script for printing.
The routes call the register's own use cases (service, moves, related, dv)
in one transaction each — never the register's HTTP API.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy import func, select

from contracts.identity import Address, PersonName, RegistrationStatus
from contracts.moves import MoveInFiling, MoveInPerson, MoveOutCertificate, MoveOutFiling
from contracts.register import CorrectRecord, FamilyRegisterItems, HouseholdPlacement, MoveWithin, RecordDeath, RegisterResident, Relationship
from contracts.related import EndSeal, NonResidentReason, NonResidentStatus, RegisterNonResident, RegisterSeal, SealStatus
from services.common.params import PositiveBigIntPath
from services.common.runtime import Runtime
from services.municipal_rrs import access, moves, related, service, staff_store
from services.municipal_rrs.domain import RegistryRuleViolation
from services.municipal_rrs.models import IncomingNoticeRow, MoveReservationRow
from services.municipal_rrs.ui import acknowledgements, auth, labels
from services.municipal_rrs.ui.forms import Form, japanese_errors, read_form

HERE = Path(__file__).parent
ASSETS = {"staff.css": "text/css; charset=utf-8", "staff.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = auth.SECURITY_HEADERS
DONE = {
    "birth": "出生届を登録しました。", "death": "死亡届を登録しました。", "move-within": "転居届を登録しました。", "move-out": "転出届を登録しました。",
    "correction": "記載事項を修正しました。", "move-in": "転入届を登録しました。", "acknowledged": "支援措置を確認しました。",
    "notice": "通知を確認済みにしました。", "non-resident": "住登外者を登録しました。", "linked": "住登外者を住民票と連携しました。",
    "seal": "印鑑登録をしました。", "seal-ended": "印鑑登録を廃止しました。", "measure": "支援措置を更新しました。",
    "measure-alert": "他団体からの支援措置の通知を確認しました。",
    "review": "審査の結果を記録しました（交付しない）。",
}
RELATIONSHIPS = [r.value for r in Relationship]


StaffScreenRefused = auth.StaffScreenRefused


def install_staff_screen_handler(app: FastAPI, on_refusal=None) -> None:
    """Answer a refused screen with its response (the app's problem handlers are for the JSON API); record the refusal
    like the API's (``on_refusal``: the register's refusal recorder)."""

    async def refused(request: Request, exc: StaffScreenRefused) -> Response:
        if on_refusal is not None:
            slug = "unauthorized" if exc.response.status_code in (303, 401) else "forbidden"
            await on_refusal(request, slug, f"{request.method} {request.url.path}: screen answered {exc.response.status_code}")
        return exc.response

    app.add_exception_handler(StaffScreenRefused, refused)


def unavailable_router(reason: str) -> APIRouter:
    """Without the DV backend no screen can honour the support-measure alert: every screen says so (fail closed)."""
    router = APIRouter(prefix="/staff", include_in_schema=False)

    @router.api_route("/{path:path}", methods=["GET", "POST"])
    async def unavailable(path: str) -> Response:
        html = ("<!doctype html><html lang=\"ja\"><meta charset=\"utf-8\"><title>窓口業務は停止中です</title>"
                "<h1>窓口業務は停止中です</h1><p>支援措置（DV等支援措置）の情報を確認できないため、住民の情報を表示できません。"
                "システム管理者に連絡してください。</p>")
        return HTMLResponse(html, status_code=503, headers={**SECURITY_HEADERS, "X-Unavailable-Reason": reason[:200]})

    return router


def staff_router(rt: Runtime, *, municipality_code: str, municipality_name: str, topology, known_municipality: Callable[[str], bool],
                 changed: Callable[[], None], record_refusal) -> APIRouter:
    """``changed`` wakes the outbox relay after a change that the network must hear; ``record_refusal`` records a refused login."""
    try:
        from services.municipal_rrs.ui import measures  # needs the DV backend (services/municipal_rrs/dv.py, contracts/dv.py)
    except ImportError as exc:
        return unavailable_router(f"DV backend missing: {exc}")
    router = APIRouter(prefix="/staff", include_in_schema=False)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(wareki=labels.wareki, jst=labels.local_time)
    env.globals.update(L=labels, municipality_name=municipality_name, municipality_code=municipality_code, relationships=RELATIONSHIPS)
    municipalities = [(m.code, m.name) for m in topology.municipalities if m.code != municipality_code]
    names = {m.code: m.name for m in topology.municipalities}

    def municipality_label(code: str | None) -> str:
        return f"{names.get(code, code)}（{code}）" if code else ""

    env.globals["municipality_label"] = municipality_label
    mx = measures.Measures(municipality_code=municipality_code, municipality_label=municipality_label, known_municipality=known_municipality)

    def page(template: str, request: Request, who: auth.StaffSession | None, *, status: int = 200, header: dict | None = None, **context) -> HTMLResponse:
        done = DONE.get(request.query_params.get("done", ""))
        html = env.get_template(template).render(who=who, done=done, request_path=request.url.path, csrf=getattr(request.state, "csrf", ""),
                                                 **(header or {}), **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    async def header_of(session) -> dict:
        """What every screen shows at the top: measures received from other municipalities not yet acknowledged, unread notices."""
        unread = (await session.execute(select(func.count()).select_from(IncomingNoticeRow).where(IncomingNoticeRow.acknowledged_at.is_(None)))).scalar_one()
        return {"incoming_alerts": await mx.unacknowledged_alerts(session), "unread_notices": unread}

    async def render(template: str, request: Request, who, *, status: int = 200, **context) -> HTMLResponse:
        async with rt.sessions() as session, session.begin():
            header = await header_of(session)
        return page(template, request, who, status=status, header=header, **context)

    def redirect(path: str, **params) -> RedirectResponse:
        query = ("&" if "?" in path else "?") + urlencode(params) if params else ""
        return RedirectResponse(path + query, status_code=303, headers=SECURITY_HEADERS)

    def clerk(request: Request) -> auth.StaffSession:
        """The clerk ``access.authorize`` signed in for this request."""
        member = request.state.staff
        return auth.StaffSession(staff_id=member.username, session_id=member.session_id, role=member.role.value, csrf=request.state.csrf)

    # the screens behind the login (access.authorize, app-wide, checks the session, the CSRF token and the role);
    # joined to ``router`` at the end, once all are declared
    screens = APIRouter(prefix="/staff", include_in_schema=False)

    # --- login ------------------------------------------------------------------------------------------

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        return page("login.html", request, None, next=request.query_params.get("next", "/staff"))

    @router.post("/login")
    async def login(request: Request) -> Response:
        """Username, password and TOTP code: a new server-side session; a failure says only that it failed (the reason is recorded)."""
        if not auth.same_origin(request):
            return HTMLResponse("別のサイトからの送信は受け付けません。", status_code=403, headers=SECURITY_HEADERS)
        form = await read_form(request)
        username = (form.get("username") or "").strip()
        target = form.get("next") or "/staff"
        if not target.startswith("/staff") or "//" in target:
            target = "/staff"
        now = datetime.now(UTC)
        request.state.caller = username[:64] or None
        async with rt.sessions() as session, session.begin():
            account, why = await staff_store.login(session, username=username, password=form.get("password") or "", code=(form.get("totp") or "").strip(), at=now)
            if account is not None:
                token, _ = await staff_store.open_session(session, account, at=now, lifetime=timedelta(seconds=auth.SESSION_SECONDS))
        if account is None:
            await record_refusal(request, "login-refused", why or "login refused")
            return page("login.html", request, None, status=401, next=target, username=username,
                        error="ログインできませんでした。職員ID・パスワード・確認コードを確かめてください（確認コードは一度しか使えません）。")
        response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(auth.COOKIE, token, max_age=auth.SESSION_SECONDS, path="/staff", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @screens.post("/logout")
    async def logout(request: Request) -> Response:
        """Ends the session row for good: the cookie, if kept, opens nothing."""
        async with rt.sessions() as session, session.begin():
            await staff_store.end_session(session, uuid.UUID(clerk(request).session_id), at=datetime.now(UTC))
        response = redirect("/staff/login")
        response.delete_cookie(auth.COOKIE, path="/staff")
        return response

    # --- search and the record --------------------------------------------------------------------------

    @screens.get("")
    async def search(request: Request) -> Response:
        who = clerk(request)
        q = request.query_params
        criteria = {k: (q.get(k) or "").strip() for k in ("name", "kana", "birth_date", "address")}
        include_closed = q.get("include_closed") == "1"
        results, truncated, error, protected = [], False, None, set()
        async with rt.sessions() as session, session.begin():
            if any(criteria.values()):
                try:
                    born = date.fromisoformat(criteria["birth_date"]) if criteria["birth_date"] else None
                except ValueError:
                    born, error = None, "生年月日の形式が正しくありません。"
                if error is None:
                    results, truncated = await service.search(
                        session, name=criteria["name"][:60] or None, kana=criteria["kana"][:120] or None, birth_date=born,
                        address=criteria["address"][:200] or None, include_closed=include_closed, limit=50,
                    )
                    protected = await mx.protected_codes(session, [r.resident_code for r in results])
            header = await header_of(session)
        await access.record_reads(request, [r.resident_code for r in results])
        return page("search.html", request, who, header=header, criteria=criteria, include_closed=include_closed, results=results,
                    truncated=truncated, error=error, searched=any(criteria.values()), protected=protected)

    async def alert_context(session, who: auth.StaffSession, code: str) -> dict:
        """The measures in force on a record, and which of them this clerk has not acknowledged (in this session, today)."""
        in_force = await mx.in_force(session, code)
        acknowledged = await acknowledgements.acknowledged_today(session, who, code)
        return {"measures": in_force, "unacknowledged": [m for m in in_force if m.id not in acknowledged], "acknowledged": acknowledged}

    async def record_context(session, who: auth.StaffSession, code: str) -> dict:
        record = await service.get_record(session, code)
        members = await service.household_members(session, record.household_id) if record.status is not RegistrationStatus.deceased else []
        return {
            "r": record, **await alert_context(session, who, code),
            "history": await service.history(session, code), "members": members,
            "seals": await related.list_seals(session, holder_resident_code=code),
            "linked_non_residents": await related.search_non_residents(session, linked_resident_code=code),
            "all_measures": await mx.of_resident(session, code),
            "requests": await mx.requests_about(session, code),
        }

    async def no_record(session, request: Request, who, code: str) -> Response:
        return page("error.html", request, who, status=404, header=await header_of(session), message=f"住民票コード {code} の住民票はありません。")

    async def record_page(template: str, code: str, request: Request, **extra) -> Response:
        """A page about one record: the record, its history, measures and alert (``record_context``)."""
        who = clerk(request)
        async with rt.sessions() as session, session.begin():
            try:
                context = await record_context(session, who, code)
            except service.NotFound:
                return await no_record(session, request, who, code)
            header = await header_of(session)
        return page(template, request, who, header=header, **extra, **context)

    @screens.get("/residents/{code}")
    async def resident(code: str, request: Request) -> Response:
        return await record_page("resident.html", code, request)

    @screens.post("/residents/{code}/acknowledgement")
    async def acknowledge(code: str, request: Request) -> Response:
        """The clerk saw the alert: one row per measure in force (the form names them, the server checks them)."""
        who = clerk(request)
        form = await read_form(request)
        async with rt.sessions() as session, session.begin():
            in_force = {m.id for m in await mx.in_force(session, code)}
            chosen = [m for m in form.list("measure_id") if m in in_force]
            if chosen:
                await acknowledgements.record(session, who, code, chosen)
        target = form.get("next") or f"/staff/residents/{code}"
        if not (target.startswith(f"/staff/residents/{code}") or target == f"/staff/births/new?household_of={code}"):
            target = f"/staff/residents/{code}"
        return redirect(target, done="acknowledged")

    # --- 出生届 -------------------------------------------------------------------------------------------

    def birth_defaults(parent) -> dict:
        if parent is None:
            return {"sex": "", "relationship": "世帯主", "birth_date": labels.today().isoformat(), "notified_date": labels.today().isoformat()}
        return {
            "family_name": parent.name.family_name, "family_name_kana": parent.name.family_name_kana or "", "address_text": parent.address.text,
            "postal_code": parent.address.postal_code or "", "household_of": parent.resident_code, "relationship": "子",
            "honseki": parent.family_register.honseki if parent.family_register else "", "hittousha": parent.family_register.hittousha if parent.family_register else "",
            "birth_date": labels.today().isoformat(), "notified_date": labels.today().isoformat(), "sex": "",
        }

    @screens.get("/births/new")
    async def birth_form(request: Request) -> Response:
        who = clerk(request)
        parent, alert = None, {}
        async with rt.sessions() as session, session.begin():
            if code := request.query_params.get("household_of"):
                try:
                    parent = await service.get_record(session, code)
                    alert = await alert_context(session, who, code)
                except service.NotFound:
                    parent = None
            header = await header_of(session)
        defaults = birth_defaults(parent)
        if alert.get("unacknowledged"):  # a protected parent's address is not put on the screen before the acknowledgement
            defaults.update(address_text="", postal_code="")
        return page("birth.html", request, who, header=header, v=defaults, parent=parent, r=parent, **alert)

    @screens.post("/births/new")
    async def birth(request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        errors: list[str] = []
        try:
            async with rt.sessions() as session, session.begin():
                household_id = None
                if head_code := form.get("household_of"):
                    try:
                        household_id = (await service.get_record(session, head_code)).household_id
                    except service.NotFound:
                        raise RegistryRuleViolation(f"住民票コード {head_code} の住民票はありません") from None
                born = form.get("birth_date")
                cmd = RegisterResident(
                    reason="birth",
                    name=PersonName(family_name=form.get("family_name"), given_name=form.get("given_name"),
                                    family_name_kana=form.get("family_name_kana"), given_name_kana=form.get("given_name_kana")),
                    birth_date=born, sex=form.get("sex"),
                    address=Address(municipality_code=municipality_code, postal_code=form.get("postal_code"), text=form.get("address_text")),
                    household=HouseholdPlacement(household_id=household_id, relationship=form.get("relationship") or ("子" if household_id else "世帯主")),
                    became_resident_on=born, family_register=FamilyRegisterItems(honseki=form.get("honseki"), hittousha=form.get("hittousha")),
                    notified_date=form.get("notified_date"),
                )
                record = await service.register_resident(session, cmd, municipality_code=municipality_code, staff=who.staff_id, today=date.today())
        except ValidationError as exc:
            errors = japanese_errors(exc)
        except RegistryRuleViolation as exc:
            errors = [f"登録できません: {exc}"]
        if errors:
            return await render("birth.html", request, who, status=422, v=form.flat(), parent=None, errors=errors)
        changed()
        return redirect(f"/staff/residents/{record.resident_code}", done="birth")

    # --- 死亡・転居・修正 (one domain method on one record) -------------------------------------------------------

    async def change_form(template: str, code: str, request: Request, **extra) -> Response:
        who = clerk(request)
        async with rt.sessions() as session, session.begin():
            try:
                record = await service.get_record(session, code)
            except service.NotFound:
                return await no_record(session, request, who, code)
            members = await service.household_members(session, record.household_id) if record.status is RegistrationStatus.active else []
            alert = await alert_context(session, who, code)
            header = await header_of(session)
        today = labels.today().isoformat()
        return page(template, request, who, header=header, r=record, members=members, today=today, v={}, **alert, **extra)

    async def form_again(template: str, code: str, request: Request, who, form, errors: list[str], **extra) -> Response:
        """The same form with what the clerk typed and why it was not accepted (nothing was written)."""
        async with rt.sessions() as session, session.begin():
            try:
                record = await service.get_record(session, code)
            except service.NotFound:
                return await no_record(session, request, who, code)
            alert = await alert_context(session, who, code)
            header = await header_of(session)
        return page(template, request, who, status=422, header=header, r=record, members=[], today=labels.today().isoformat(),
                    v=form.flat(), errors=errors, **alert, **extra)

    async def run_change(template: str, code: str, request: Request, build, act, done: str, **extra) -> Response:
        who = clerk(request)
        form = await read_form(request)
        errors: list[str] = []
        try:
            cmd = build(form)
            async with rt.sessions() as session, session.begin():
                await service.change(session, code, lambda r: act(r, cmd), staff=who.staff_id)
        except ValidationError as exc:
            errors = japanese_errors(exc)
        except RegistryRuleViolation as exc:
            errors = [f"登録できません: {exc}"]
        except service.NotFound:
            errors = [f"住民票コード {code} の住民票はありません。"]
        if errors:
            return await form_again(template, code, request, who, form, errors, **extra)
        changed()
        return redirect(f"/staff/residents/{code}", done=done)

    @screens.get("/residents/{code}/death")
    async def death_form(code: str, request: Request) -> Response:
        return await change_form("death.html", code, request)

    @screens.post("/residents/{code}/death")
    async def death(code: str, request: Request) -> Response:
        return await run_change("death.html", code, request,
                                lambda f: RecordDeath(death_date=f.get("death_date"), notified_date=f.get("notified_date")),
                                lambda r, cmd: r.record_death(cmd, today=date.today()), "death")

    @screens.get("/residents/{code}/move-within")
    async def move_within_form(code: str, request: Request) -> Response:
        return await change_form("move_within.html", code, request)

    @screens.post("/residents/{code}/move-within")
    async def move_within(code: str, request: Request) -> Response:
        return await run_change("move_within.html", code, request, lambda f: MoveWithin(
            new_address=Address(municipality_code=municipality_code, postal_code=f.get("postal_code"), text=f.get("address_text")),
            move_date=f.get("move_date"), notified_date=f.get("notified_date"),
        ), lambda r, cmd: r.move_within(cmd), "move-within")

    @screens.get("/residents/{code}/correction")
    async def correction_form(code: str, request: Request) -> Response:
        return await change_form("correction.html", code, request)

    def correction_from(form: Form, current) -> CorrectRecord:
        """Only the items the clerk changed are corrected."""
        name = PersonName(family_name=form.get("family_name"), given_name=form.get("given_name"),
                          family_name_kana=form.get("family_name_kana"), given_name_kana=form.get("given_name_kana"))
        address = Address(municipality_code=current.address.municipality_code, postal_code=form.get("postal_code"), text=form.get("address_text"))
        birth = date.fromisoformat(form.get("birth_date")) if form.get("birth_date") else current.birth_date
        return CorrectRecord(
            ex_officio=form.get("ex_officio") == "1",
            name=name if name != current.name else None,
            address=address if address != current.address else None,
            birth_date=birth if birth != current.birth_date else None,
            sex=form.get("sex") if form.get("sex") and form.get("sex") != current.sex.value else None,
            correction_date=form.get("correction_date"), explanation=form.get("explanation"),
        )

    @screens.post("/residents/{code}/correction")
    async def correction(code: str, request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        errors: list[str] = []
        try:
            async with rt.sessions() as session, session.begin():
                current = await service.get_record(session, code)
                cmd = correction_from(form, current)
                await service.change(session, code, lambda r: r.correct(cmd), staff=who.staff_id)
        except ValidationError as exc:
            errors = japanese_errors(exc)
        except ValueError:
            errors = ["生年月日の形式が正しくありません。"]
        except RegistryRuleViolation as exc:
            errors = [f"修正できません: {exc}"]
        except service.NotFound:
            errors = [f"住民票コード {code} の住民票はありません。"]
        if errors:
            return await form_again("correction.html", code, request, who, form, errors)
        changed()
        return redirect(f"/staff/residents/{code}", done="correction")

    # --- 転出 ---------------------------------------------------------------------------------------------

    @screens.get("/residents/{code}/move-out")
    async def move_out_form(code: str, request: Request) -> Response:
        return await change_form("move_out.html", code, request, municipalities=municipalities)

    @screens.post("/residents/{code}/move-out")
    async def move_out(code: str, request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        errors: list[str] = []
        movers = [code, *[c for c in form.list("with") if c != code]]
        try:
            abroad = form.get("destination_kind") == "abroad"
            filing = MoveOutFiling(
                resident_codes=movers,
                destination=None if abroad else Address(municipality_code=form.get("destination_municipality"), postal_code=form.get("destination_postal_code"),
                                                        text=form.get("destination_text")),
                destination_country=form.get("destination_country") if abroad else None,
                planned_date=form.get("planned_date"), notified_date=form.get("notified_date"), remaining_head=form.get("remaining_head"),
            )
            async with rt.sessions() as session, session.begin():
                await moves.file_move_out(session, filing, municipality_code=municipality_code, known_municipality=known_municipality,
                                          staff=who.staff_id, today=date.today())
        except ValidationError as exc:
            errors = japanese_errors(exc)
        except RegistryRuleViolation as exc:
            errors = [f"登録できません: {exc}"]
        except service.NotFound as exc:
            errors = [f"住民票コード {exc} の住民票はありません。"]
        if errors:
            async with rt.sessions() as session, session.begin():
                record = await service.get_record(session, code)
                members = await service.household_members(session, record.household_id)
                alert = await alert_context(session, who, code)
                header = await header_of(session)
            return page("move_out.html", request, who, status=422, header=header, r=record, members=members, municipalities=municipalities,
                        today=labels.today().isoformat(), v=form.flat(), errors=errors, **alert)
        changed()
        return redirect(f"/staff/residents/{code}", done="move-out")

    # --- 転入 (from the 転入予約 list) ---------------------------------------------------------------------------

    async def reservations(session) -> list[dict]:
        """Pending 転出証明書情報 grouped by procedure: a household that left together moves in together."""
        rows = (await session.execute(select(MoveReservationRow).where(MoveReservationRow.status == "pending").order_by(MoveReservationRow.received_at))).scalars()
        groups: dict[uuid.UUID, list[MoveOutCertificate]] = defaultdict(list)
        for row in rows:
            groups[row.procedure_id].append(MoveOutCertificate.model_validate_json(row.payload))
        return [{"procedure_id": pid, "certificates": certs, "first": certs[0]} for pid, certs in groups.items()]

    @screens.get("/move-ins")
    async def move_ins(request: Request) -> Response:
        who = clerk(request)
        async with rt.sessions() as session, session.begin():
            groups = await reservations(session)
            header = await header_of(session)
        return page("move_ins.html", request, who, header=header, groups=groups, today=labels.today().isoformat(), v={})

    @screens.post("/move-ins")
    async def move_in(request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        errors: list[str] = []
        records = []
        try:
            filing = MoveInFiling(
                persons=[MoveInPerson(resident_code=c) for c in form.list("resident_code")],
                new_address=Address(municipality_code=municipality_code, postal_code=form.get("postal_code"), text=form.get("address_text")),
                move_date=form.get("move_date"), notified_date=form.get("notified_date"),
            )
            async with rt.sessions() as session, session.begin():
                records = await moves.file_move_in(session, filing, municipality_code=municipality_code, staff=who.staff_id, today=date.today())
        except ValidationError as exc:
            errors = japanese_errors(exc)
        except moves.NoMatchingMoveOut as exc:
            errors = [f"転入予約がありません: {', '.join(exc.resident_codes)}"]
        except RegistryRuleViolation as exc:
            errors = [f"登録できません: {exc}"]
        if errors:
            async with rt.sessions() as session, session.begin():
                groups = await reservations(session)
                header = await header_of(session)
            return page("move_ins.html", request, who, status=422, header=header, groups=groups, today=labels.today().isoformat(),
                        v=form.flat(), errors=errors, failed_procedure=form.get("procedure_id"))
        changed()
        return redirect(f"/staff/residents/{records[0].resident_code}", done="move-in")

    # --- 通知 ----------------------------------------------------------------------------------------------

    @screens.get("/notices")
    async def notices(request: Request) -> Response:
        who = clerk(request)
        only_unread = request.query_params.get("all") != "1"
        async with rt.sessions() as session, session.begin():
            stmt = select(IncomingNoticeRow).order_by(IncomingNoticeRow.cs_sequence.desc()).limit(200)
            if only_unread:
                stmt = stmt.where(IncomingNoticeRow.acknowledged_at.is_(None))
            rows = (await session.execute(stmt)).scalars().all()
            pending_moves = len(await reservations(session))
            awaiting_link = await related.non_residents_awaiting_link(session)
            received = await mx.received_alerts(session)
            header = await header_of(session)
        return page("notices.html", request, who, header=header, notices=rows, only_unread=only_unread, pending_moves=pending_moves,
                    awaiting_link=awaiting_link, received=received)

    @screens.post("/notices/{sequence}/acknowledgement")
    async def acknowledge_notice(sequence: PositiveBigIntPath, request: Request) -> Response:
        who = clerk(request)
        async with rt.sessions() as session, session.begin():
            row = await session.get(IncomingNoticeRow, sequence, with_for_update=True)
            if row is not None and row.acknowledged_at is None:
                row.acknowledged_by, row.acknowledged_at = who.staff_id, datetime.now(UTC)
        return redirect("/staff/notices", done="notice")

    # --- 住民票の写し ---------------------------------------------------------------------------------------

    @screens.get("/residents/{code}/certificate")
    async def certificate_form(code: str, request: Request) -> Response:
        return await record_page("certificate_form.html", code, request, requesters=measures.REQUESTERS, v={})

    @screens.post("/residents/{code}/certificate")
    async def issue_certificate(code: str, request: Request) -> Response:
        """Issue a 住民票の写し — refused unless this clerk acknowledged every measure in force, in this session, today."""
        who = clerk(request)
        form = await read_form(request)
        async with rt.sessions() as session, session.begin():
            try:
                context = await record_context(session, who, code)
            except service.NotFound:
                return await no_record(session, request, who, code)
            header = await header_of(session)
            if context["unacknowledged"]:
                return page("certificate_form.html", request, who, status=409, header=header, requesters=measures.REQUESTERS, v=form.flat(),
                            errors=["支援措置の対象者です。交付の前に、画面上部の警告を確認してください。"], **context)
            outcome = await mx.request_certificate(session, record=context["r"], form=form, staff=who.staff_id)
        if not outcome.issued:
            said = {"errors": outcome.errors} if outcome.status == 422 else {"messages": outcome.errors}
            return page("certificate_form.html", request, who, status=outcome.status, header=header, requesters=measures.REQUESTERS, v=form.flat(),
                        refused=outcome.status in (403, 404), **said, **context)
        return redirect(f"/staff/certificates/{outcome.request_id}")  # a reload prints again, it does not issue again

    @screens.get("/certificates/{request_id}")
    async def certificate(request_id: str, request: Request) -> Response:
        """The printable 住民票の写し this clerk issued; showing it is a disclosure, so the acknowledgement rule applies again."""
        who = clerk(request)
        async with rt.sessions() as session, session.begin():
            header = await header_of(session)
            found = await mx.issued(session, request_id, staff=who.staff_id)
            if found is None:
                return page("error.html", request, who, status=404, header=header, message="この交付記録は表示できません（交付した職員本人のみ表示できます）。")
            outcome, code = found
            context = await record_context(session, who, code)
        if context["unacknowledged"]:
            return redirect(f"/staff/residents/{code}")
        return page("certificate.html", request, who, header=header, outcome=outcome, **context)

    @screens.get("/certificate-reviews")
    async def reviews(request: Request) -> Response:
        """Requests waiting for a reviewer (every third party; those about protected persons first)."""
        who = clerk(request)
        async with rt.sessions() as session, session.begin():
            queue = await mx.review_queue(session)
            header = await header_of(session)
        return page("reviews.html", request, who, header=header, queue=queue)

    @screens.post("/certificate-reviews/{request_id}")
    async def review(request_id: str, request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        async with rt.sessions() as session:
            errors, state = await mx.decide_review(session, request_id, form, staff=who.staff_id)
        if errors:
            async with rt.sessions() as session, session.begin():
                queue = await mx.review_queue(session)
                header = await header_of(session)
            return page("reviews.html", request, who, status=409, header=header, queue=queue, errors=errors)
        if state == "issued":
            return redirect(f"/staff/certificates/{request_id}")
        return redirect("/staff/certificate-reviews", done="review")

    # --- 支援措置 -----------------------------------------------------------------------------------------

    @screens.get("/measures")
    async def measures_page(request: Request) -> Response:
        who = clerk(request)
        q = request.query_params
        async with rt.sessions() as session, session.begin():
            view = await mx.list_page(session, status=q.get("status") or None, expiring_within_days=q.get("expiring_within_days") or None, today=date.today())
            header = await header_of(session)
        return page("measures.html", request, who, header=header, today=labels.today().isoformat(), v={"victim": q.get("resident_code", "")}, **view)

    @screens.post("/measures")
    async def apply_measure(request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        async with rt.sessions() as session:
            errors = await mx.apply(session, form, staff=who.staff_id)
        if errors:
            async with rt.sessions() as session, session.begin():
                view = await mx.list_page(session, status=None, expiring_within_days=None, today=date.today())
                header = await header_of(session)
            return page("measures.html", request, who, status=422, header=header, today=labels.today().isoformat(), v=form.flat(), errors=errors, **view)
        changed()
        return redirect("/staff/measures", done="measure")

    @screens.post("/measures/{measure_id}/{action}")
    async def measure_action(measure_id: str, action: str, request: Request) -> Response:
        who = clerk(request)
        if action not in measures.ACTIONS:
            return page("error.html", request, who, status=404, message="その操作はありません。")
        form = await read_form(request)
        async with rt.sessions() as session:
            errors = await mx.act(session, measure_id, action, form, staff=who.staff_id)
        if errors:
            async with rt.sessions() as session, session.begin():
                view = await mx.list_page(session, status=None, expiring_within_days=None, today=date.today())
                header = await header_of(session)
            return page("measures.html", request, who, status=409, header=header, today=labels.today().isoformat(), v={}, errors=errors, **view)
        changed()
        return redirect(form.get("next") if (form.get("next") or "").startswith("/staff/") else "/staff/measures", done="measure")

    @screens.post("/measure-alerts/{alert_id}/acknowledgement")
    async def acknowledge_measure_alert(alert_id: str, request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        async with rt.sessions() as session, session.begin():
            await mx.acknowledge_alert(session, alert_id, staff=who.staff_id)
        changed()  # the home municipality hears who saw its measure
        target = form.get("next") or "/staff"
        return redirect(target if target.startswith("/staff") and "//" not in target else "/staff", done="measure-alert")

    # --- 住登外者 -----------------------------------------------------------------------------------------

    @screens.get("/non-residents")
    async def non_residents(request: Request) -> Response:
        who = clerk(request)
        q = request.query_params
        async with rt.sessions() as session, session.begin():
            try:
                born = date.fromisoformat(q["birth_date"]) if q.get("birth_date") else None
            except ValueError:
                born = None
            status = NonResidentStatus(q["status"]) if q.get("status") in NonResidentStatus._value2member_map_ else None
            found = await related.search_non_residents(session, name=(q.get("name") or "")[:60] or None, kana=(q.get("kana") or "")[:120] or None,
                                                       birth_date=born, status=status, limit=100)
            header = await header_of(session)
        return page("non_residents.html", request, who, header=header, found=found, q=q, reasons=list(NonResidentReason), v={})

    @screens.post("/non-residents")
    async def register_non_resident(request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        errors: list[str] = []
        try:
            cmd = RegisterNonResident(
                name=PersonName(family_name=form.get("family_name"), given_name=form.get("given_name"),
                                family_name_kana=form.get("family_name_kana"), given_name_kana=form.get("given_name_kana")),
                birth_date=form.get("birth_date"), sex=form.get("sex"), individual_number=form.get("individual_number"),
                address_text=form.get("address_text"), address_municipality_code=form.get("address_municipality_code"),
                postal_code=form.get("postal_code"), reason=form.get("reason"), note=form.get("note"),
            )
            async with rt.sessions() as session, session.begin():
                created = await related.register_non_resident(session, cmd, municipality_code=municipality_code, staff=who.staff_id)
        except ValidationError as exc:
            errors = japanese_errors(exc)
        except RegistryRuleViolation as exc:
            errors = [f"登録できません: {exc}"]
        if errors:
            return await render("non_residents.html", request, who, status=422, found=[], q={}, reasons=list(NonResidentReason), v=form.flat(), errors=errors)
        return redirect(f"/staff/non-residents/{created.non_resident_id}", done="non-resident")

    @screens.get("/non-residents/{non_resident_id}")
    async def non_resident(non_resident_id: uuid.UUID, request: Request) -> Response:
        who = clerk(request)
        async with rt.sessions() as session, session.begin():
            try:
                person = await related.get_non_resident(session, non_resident_id)
            except related.NotFound:
                return page("error.html", request, who, status=404, header=await header_of(session), message="その住登外者は登録されていません。")
            candidates = await related.link_candidates(session, non_resident_id) if person.status is NonResidentStatus.active else []
            header = await header_of(session)
        return page("non_resident.html", request, who, header=header, p=person, candidates=candidates)

    @screens.post("/non-residents/{non_resident_id}/link")
    async def link_non_resident(non_resident_id: uuid.UUID, request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        error = None
        try:
            async with rt.sessions() as session, session.begin():
                await related.link_non_resident(session, non_resident_id, form.get("resident_code") or "", staff=who.staff_id)
        except related.NotFound:
            error = "住登外者または住民票が見つかりません。"
        except RegistryRuleViolation as exc:
            error = f"連携できません: {exc}"
        if error:
            async with rt.sessions() as session, session.begin():
                person = await related.get_non_resident(session, non_resident_id)
                candidates = await related.link_candidates(session, non_resident_id)
                header = await header_of(session)
            return page("non_resident.html", request, who, status=409, header=header, p=person, candidates=candidates, errors=[error])
        return redirect(f"/staff/non-residents/{non_resident_id}", done="linked")

    # --- 印鑑登録 -----------------------------------------------------------------------------------------

    @screens.get("/seals")
    async def seals(request: Request) -> Response:
        who = clerk(request)
        q = request.query_params
        holder = q.get("holder") if (q.get("holder") or "").isdigit() else None
        status = SealStatus(q["status"]) if q.get("status") in SealStatus._value2member_map_ else None
        async with rt.sessions() as session, session.begin():
            found = await related.list_seals(session, holder_resident_code=holder, status=status, limit=200)
            header = await header_of(session)
        return page("seals.html", request, who, header=header, found=found, q=q, today=labels.today().isoformat(), v={"holder": holder or ""})

    @screens.post("/seals")
    async def register_seal(request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        errors: list[str] = []
        try:
            cmd = RegisterSeal(holder_resident_code=form.get("holder"), impression=form.get("impression"), registered_on=form.get("registered_on"))
            async with rt.sessions() as session, session.begin():
                await related.register_seal(session, cmd, staff=who.staff_id, today=date.today())
        except ValidationError as exc:
            errors = japanese_errors(exc)
        except related.NotFound:
            errors = ["その住民票コードの住民票はありません。"]
        except RegistryRuleViolation as exc:
            errors = [f"登録できません: {exc}"]
        if errors:
            return await render("seals.html", request, who, status=422, found=[], q={}, today=labels.today().isoformat(), v=form.flat(), errors=errors)
        return redirect("/staff/seals", done="seal", holder=cmd.holder_resident_code)

    @screens.post("/seals/{registration_number}/abolition")
    async def end_seal(registration_number: PositiveBigIntPath, request: Request) -> Response:
        who = clerk(request)
        form = await read_form(request)
        errors: list[str] = []
        try:
            cmd = EndSeal(reason=form.get("reason"), ended_on=form.get("ended_on"), explanation=form.get("explanation"))
            async with rt.sessions() as session, session.begin():
                seal = await related.end_seal(session, registration_number, cmd, staff=who.staff_id, today=date.today())
        except ValidationError as exc:
            errors = japanese_errors(exc)
        except related.NotFound:
            errors = ["その印鑑登録はありません。"]
        except RegistryRuleViolation as exc:
            errors = [f"廃止できません: {exc}"]
        if errors:
            return await render("seals.html", request, who, status=409, found=[], q={}, today=labels.today().isoformat(), v={}, errors=errors)
        return redirect("/staff/seals", done="seal-ended", holder=seal.holder_resident_code)

    @router.get("/assets/{name}")
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            return Response("not found", status_code=404)
        return Response((HERE / "assets" / name).read_bytes(), media_type=ASSETS[name], headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})

    both = APIRouter()
    both.include_router(router)
    both.include_router(screens)
    return both
