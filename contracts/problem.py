"""RFC 9457 problem details, the one error shape on every HTTP boundary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class InvalidParam(BaseModel):
    name: str
    code: str
    reason: str


class Problem(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    invalidParams: list[InvalidParam] | None = None


PROBLEM_BASE = "https://jukinet.example/problems/"
