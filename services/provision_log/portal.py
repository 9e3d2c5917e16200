"""The resident portal (住民向け提供記録の確認ページ): server-rendered HTML in Japanese.

Login: the resident opens ``/portal/login?credential=<token>`` (the link the
municipality hands over with the credential) or pastes the credential into the
form there. The credential is checked like any resident credential (signed by
the municipality's RRS, ``scope resident``, audience ``provision-log``); the
portal then sets an HttpOnly, SameSite=Lax cookie holding a short session
token signed by the provision log's own key (audience
``provision-log-portal``), and the credential itself is not kept.

The page shows only what the log proves. Each of the resident's leaves is
listed (found in the log, not in the records table); the stored record is
shown only when it is the one its leaf commits to, with a badge from the
server's check (the record against its leaf, the leaf's inclusion proof
against the newest signed checkpoint). Otherwise the record is marked
「この記録は検証できません」 with the reason, and only what the leaf itself
proves is shown. A button checks the same in the browser: ``assets/verify.js``
rebuilds the record from the fields displayed, hashes it, and checks it
against the leaf and the leaf's inclusion proof to the signed checkpoint (Web
Crypto: SHA-256 and Ed25519 against the log's public key); the proof bundle
downloads for ``python -m services.provision_log.verify inclusion``.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs
from uuid import UUID

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from contracts.affairs import AFFAIRS, Item
from contracts.transparency import IncidentKind, InclusionProof, RecordStatus
from services.common.problems import ProblemError
from services.common.runtime import Runtime
from services.common.tokens import RESIDENT_CREDENTIAL_MAX_SECONDS, RESIDENT_CREDENTIAL_SCOPE, TokenRefused
from services.provision_log import store
from services.provision_log.models import Refusal
from services.provision_log.settings import LogSettings

COOKIE = "jukinet_portal"
SESSION_AUDIENCE = "provision-log-portal"
JST = timezone(timedelta(hours=9), "JST")
ASSETS_DIR = Path(__file__).parent / "assets"
ASSETS = {"portal.css": "text/css; charset=utf-8", "verify.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

ITEM_LABELS = {
    Item.resident_code: "住民票コード",
    Item.individual_number: "個人番号",
    Item.name: "氏名",
    Item.name_kana: "氏名の振り仮名",
    Item.former_surname: "旧氏",
    Item.alias: "通称",
    Item.birth_date: "生年月日",
    Item.sex: "性別",
    Item.address: "住所",
    Item.status: "登録の状態",
    Item.change: "異動事由・異動年月日",
}
QUERY_LABELS = {"ByResidentCode": "住民票コードによる照会", "ByIndividualNumber": "個人番号による照会", "ByBasicItems": "基本4情報による検索"}
INCIDENT_LABELS = {IncidentKind.wrong_lookup: "誤った照会", IncidentKind.wrong_provision: "誤った提供"}
UNVERIFIABLE = "この記録は検証できません"
PROBLEM_LABELS = {
    RecordStatus.record_altered: "保存されている記録が、ログに記録された内容と一致しません（改ざんの可能性があります）。ログが証明する内容だけを表示しています。",
    RecordStatus.record_missing: "ログには提供の記録がありますが、保存されている記録が見つかりません（削除された可能性があります）。ログが証明する内容だけを表示しています。",
    RecordStatus.not_in_signed_log: "この記録は、署名されたログで確認できません（記録、ログまたはチェックポイントが改ざんされた可能性があります）。",
    RecordStatus.index_mismatch: "ログの索引と記録の印が一致しません（改ざんの可能性があります）。",
}
INCIDENT_PROBLEM_LABELS = {
    RecordStatus.record_altered: "この事故の説明は、ログに記録された内容と一致しないため表示できません。",
    RecordStatus.record_missing: "この事故の説明が見つかりません（削除された可能性があります）。",
    RecordStatus.not_in_signed_log: "事故の記録がありますが、署名されたログで確認できません。",
}


def jst(moment: datetime) -> str:
    return moment.astimezone(JST).strftime("%Y年%m月%d日 %H:%M:%S")


def party_label(party: str, prefectures: dict[str, str], agencies: dict[str, str]) -> str:
    if party.startswith("agency-"):
        return agencies.get(party[7:], party[7:])
    return provider_label(party, prefectures)


def provider_label(provider: str, prefectures: dict[str, str]) -> str:
    if provider == "national":
        return "全国サーバ"
    if provider.startswith("pref-"):
        return f"{prefectures.get(provider[5:], provider[5:])} 都道府県サーバ"
    if provider.startswith("cs-"):
        return f"市区町村CS（{provider[3:]}）"
    return provider


def portal_router(rt: Runtime, log_settings: LogSettings, *, proof_for: Callable[[Runtime, str, UUID], Awaitable[InclusionProof]]) -> APIRouter:
    router = APIRouter(prefix="/portal", include_in_schema=False)
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["jst"] = jst
    record_refusal = rt.refusal_recorder(Refusal)
    prefectures = {p.code: p.name for p in rt.settings.topology_model.prefectures}
    agencies = {a.id: a.name for a in rt.settings.topology_model.agencies}
    public_key = rt.keys.key_for(rt.party)
    raw_key = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) if public_key else b""
    key_fingerprint = hashlib.sha256(raw_key).hexdigest()[:16] if raw_key else ""

    def page(template: str, status: int = 200, **context) -> HTMLResponse:
        html = env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def session_resident(request: Request) -> str | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            verified = rt.keys.verify(token, audience=SESSION_AUDIENCE, allowed_issuers=lambda party: party == rt.party, longer_lived={"portal-session": log_settings.portal_session_seconds})
        except TokenRefused:
            return None
        return verified.subject if verified.claims.get("scope") == "portal-session" else None

    async def login_with(request: Request, credential: str) -> Response:
        try:
            verified = rt.keys.verify(credential.strip(), audience=rt.party, allowed_issuers=lambda party: party.startswith("rrs-"),
                                      longer_lived={RESIDENT_CREDENTIAL_SCOPE: RESIDENT_CREDENTIAL_MAX_SECONDS})
            if verified.claims.get("scope") != RESIDENT_CREDENTIAL_SCOPE:
                raise TokenRefused("not a resident credential")
        except TokenRefused as exc:
            await record_refusal(request, "portal-login-refused", str(exc))
            return page("login.html", status=401, error="この認証情報では確認できません。市区町村の窓口で発行された認証情報をお確かめください。")
        lifetime = min(log_settings.portal_session_seconds, int(verified.claims["exp"] - time.time()))
        session = rt.token_for(SESSION_AUDIENCE, subject=verified.subject, lifetime_seconds=max(lifetime, 1), claims={"scope": "portal-session"})
        response = RedirectResponse("/portal", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(COOKIE, session, max_age=max(lifetime, 1), path="/portal", httponly=True, samesite="lax", secure=request.url.scheme == "https")
        return response

    @router.get("/login")
    async def login_page(request: Request, credential: str | None = None) -> Response:
        if credential:
            return await login_with(request, credential)
        return page("login.html")

    @router.post("/login")
    async def login_form(request: Request) -> Response:
        body = await request.body()
        if len(body) > 8192:
            return page("login.html", status=413, error="入力が長すぎます。")
        credential = (parse_qs(body.decode("utf-8", errors="replace")).get("credential") or [""])[0]
        if not credential.strip():
            return page("login.html", status=400, error="認証情報を入力してください。")
        return await login_with(request, credential)

    @router.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/portal/login", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/portal")
        return response

    @router.get("")
    async def portal(request: Request) -> Response:
        code = session_resident(request)
        if code is None:
            return RedirectResponse("/portal/login", status_code=303, headers=SECURITY_HEADERS)
        async with rt.sessions() as session:
            rows = await store.resident_view(session, code, key=public_key, origin=log_settings.origin, limit=200, now=datetime.now(UTC))
            latest = await store.latest_checkpoint(session)
        views = []
        for row in rows:
            shown = row.record or row.logged  # the stored record only when it matches its leaf; else what the leaf proves
            badge = {RecordStatus.verified: "ok", RecordStatus.pending: "pending"}.get(row.status, "failed")
            view = {
                "record_id": str(row.record_id), "leaf_index": row.leaf_index, "badge": badge, "status": row.status.value,
                "problem": PROBLEM_LABELS.get(row.status), "detail": row.problem, "r": row.record, "old_format": bool(row.unbound_fields),
                "incidents": [{
                    "label": INCIDENT_LABELS[i.kind] if i.kind else "事故", "i": i,
                    "reporter": party_label(i.reporter, prefectures, agencies) if i.reporter else "",
                    "problem": INCIDENT_PROBLEM_LABELS.get(i.status),
                    "reported_at_json": i.model_dump(mode="json")["reported_at"],
                } for i in row.incidents],
            }
            if shown is not None:
                view |= {
                    "provided_at": shown.provided_at, "provided_at_json": shown.model_dump(mode="json")["provided_at"],
                    "item_codes": " ".join(shown.items), "item_labels": "、".join(ITEM_LABELS.get(i, str(i)) for i in shown.items),
                    "provider_code": shown.provider, "provider": provider_label(shown.provider, prefectures),
                    "query_type": shown.query_type, "query": QUERY_LABELS.get(shown.query_type, shown.query_type),
                    "recipient_code": shown.recipient, "affair_code": shown.affair,
                    "recipient_name": row.record.recipient_name if row.record else agencies.get(shown.recipient, shown.recipient),
                    "affair_name": row.record.affair_name if row.record else (AFFAIRS[shown.affair].name if shown.affair in AFFAIRS else shown.affair),
                }
            views.append(view)
        return page(
            "portal.html", resident_code=code, records=views, checkpoint=latest, key_b64=base64.b64encode(raw_key).decode(),
            key_fingerprint=key_fingerprint, origin=log_settings.origin, now=datetime.now(UTC),
        )

    @router.get("/provisions/{record_id}/proof.json")
    async def proof_download(record_id: UUID, request: Request) -> Response:
        code = session_resident(request)
        if code is None:
            raise ProblemError(401, "unauthorized", "Log in to the portal first")
        bundle = await proof_for(rt, code, record_id)
        return JSONResponse(
            bundle.model_dump(mode="json", exclude_none=True),
            headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="proof-{record_id}.json"'},
        )

    @router.get("/assets/{name}")
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise ProblemError(404, "not-found", "No such file")
        return Response((ASSETS_DIR / name).read_bytes(), media_type=ASSETS[name], headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})

    return router
