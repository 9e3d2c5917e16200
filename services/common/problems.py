"""RFC 9457 problem responses for every HTTP API of the network."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.problem import PROBLEM_BASE, InvalidParam, Problem
from services.common import metrics

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
    body = Problem(type=PROBLEM_BASE + slug, title=title, status=status, detail=detail, instance=str(request.url.path), invalidParams=invalid, **extensions)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


#: Called for every refused request: (request, slug, detail). Services record refusals with it.
RefusalHook = Callable[[Request, str, str], Awaitable[None]]


def invalid_params(exc: RequestValidationError) -> list[InvalidParam]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        out.append(InvalidParam(name=".".join(loc) or "body", code=str(err.get("type", "invalid")), reason=str(err.get("msg", "invalid"))))
    return out


def install_problem_handlers(app: FastAPI, on_refusal: RefusalHook | None = None) -> None:
    async def record(request: Request, slug: str, detail: str) -> None:
        metrics.count_refusal(channel="http", reason=slug)
        if on_refusal is not None:
            await on_refusal(request, slug, detail)

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
