"""RFC 9457 problem responses for every HTTP API of the network."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.problem import PROBLEM_BASE, InvalidParam, Problem
from services.common import metrics
from services.common.safe_text import escaped, has_control_characters

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(self, status: int, slug: str, title: str, detail: str | None = None, **extensions):
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extensions = extensions


def problem_response(request: Request, status: int, slug: str, title: str, detail: str | None = None, invalid: list[InvalidParam] | None = None, **extensions) -> JSONResponse:
    """The problem document; what may echo the caller's input (detail, instance) never carries a raw control character."""
    body = Problem(type=PROBLEM_BASE + slug, title=escaped(title), status=status, detail=None if detail is None else escaped(detail), instance=escaped(request.url.path),
                   invalidParams=invalid, **extensions)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


#: Called for every refused request: (request, slug, detail). Services record refusals with it.
RefusalHook = Callable[[Request, str, str], Awaitable[None]]


def invalid_params(exc: RequestValidationError) -> list[InvalidParam]:
    """What did not fit, by name; the names (a key of the caller's JSON) and reasons are escaped, never echoed raw."""
    out = []
    for err in exc.errors():
        loc = [escaped(p, 200) for p in err.get("loc", ()) if p != "body"]
        out.append(InvalidParam(name=".".join(loc) or "body", code=escaped(err.get("type", "invalid"), 100), reason=escaped(err.get("msg", "invalid"), 500)))
    return out


class RefuseControlCharacters:
    """ASGI middleware: a request whose path or query holds a control character (``%00``, ``%0b`` …) is refused
    with 400 and recorded before any route sees it. No route takes one: a name, a code or a number never holds
    one, and PostgreSQL text cannot hold NUL."""

    def __init__(self, app, record: Callable[[Request, str, str], Awaitable[None]]):
        self.app = app
        self._record = record

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            query = scope.get("query_string", b"").decode("latin-1")
            if has_control_characters(scope.get("path", "")) or ("%" in query and has_control_characters(unquote_plus(query, errors="replace"))):
                request = Request(scope, receive)
                where = "path" if has_control_characters(scope.get("path", "")) else "query"
                detail = f"the {where} holds a control character"
                await self._record(request, "control-characters", detail)
                response = problem_response(request, 400, "control-characters", "The request holds control characters", detail)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def document_problems(document: dict) -> dict:
    """The OpenAPI ``document`` with the problem answers the handlers below give: 422 is a problem document (not
    FastAPI's default ``HTTPValidationError``), and every operation declares a ``default`` answer (a refusal or an
    error: 400, 401, 403, 404, 409 …) as one."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = {"description": "The request does not fit the contract", "content": content}
            responses.setdefault("default", {"description": "A refusal or an error, as a problem document (RFC 9457)", "content": content})
    for unused in ("HTTPValidationError", "ValidationError"):  # in this order: the first refers to the second
        if unused in schemas and f'"#/components/schemas/{unused}"' not in json.dumps(document):
            del schemas[unused]
    return document


def install_problem_handlers(app: FastAPI, on_refusal: RefusalHook | None = None) -> None:
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document_problems(generate())  # generate() keeps its document in app.openapi_schema
        return app.openapi_schema

    app.openapi = openapi

    async def record(request: Request, slug: str, detail: str) -> None:
        metrics.count_refusal(channel="http", reason=slug)
        if on_refusal is not None:
            await on_refusal(request, slug, detail)

    app.add_middleware(RefuseControlCharacters, record=record)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        params = invalid_params(exc)
        detail = "; ".join(f"{p.name}: {p.reason}" for p in params)[:2000]
        await record(request, "invalid-request", detail)
        return problem_response(request, 422, "invalid-request", "The request does not fit the contract", detail, invalid=params)

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError):
        if exc.status >= 400 and exc.status != 404:
            await record(request, exc.slug, exc.detail or exc.title)
        return problem_response(request, exc.status, exc.slug, exc.title, exc.detail, **exc.extensions)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized", 403: "forbidden"}.get(exc.status_code, "http-error")
        await record(request, slug, str(exc.detail))
        return problem_response(request, exc.status_code, slug, str(exc.detail))
