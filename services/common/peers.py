"""Calling another node of the network with this node's signed token, in one place.

An answer is validated against its contract on the way in. A problem
document from the peer (4xx) is raised as :class:`PeerProblem`, so the caller
decides whether to pass it on as it is or to answer with its own; anything
else (no answer, 5xx, an answer that breaks the contract) is a problem of
this node: the peer is unavailable.
"""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ValidationError

from services.common.problems import PROBLEM_MEDIA_TYPE, ProblemError


class PeerProblem(Exception):
    """The peer answered with a problem document."""

    def __init__(self, response: httpx.Response):
        super().__init__(response.text[:500])
        self.response = response
        self.status = response.status_code
        self.document = response.json()

    @property
    def slug(self) -> str:
        return str(self.document.get("type", "refused")).rsplit("/", 1)[-1]

    def as_own(self) -> ProblemError:
        """The same refusal, answered (and recorded) by this node."""
        return ProblemError(self.status, self.slug, self.document.get("title", "Refused"), self.document.get("detail"))


async def call_peer(rt, node_id: str, party: str, method: str, path: str, answer: type[BaseModel], body: BaseModel | None = None,
                    *, peer_name: str, slug_prefix: str, unavailable_status: int = 502):
    try:
        response = await rt.http.request(
            method, f"{rt.settings.peer(node_id)}{path}", content=body.model_dump_json() if body is not None else None,
            headers={"content-type": "application/json", "authorization": f"Bearer {rt.token_for(party)}"},
        )
    except httpx.HTTPError as exc:
        raise ProblemError(unavailable_status, f"{slug_prefix}-unavailable", f"The {peer_name} did not answer", str(exc)) from None
    if response.is_success:
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            raise ProblemError(502, f"{slug_prefix}-answer-invalid", f"The {peer_name}'s answer does not fit the contract", str(exc)[:2000]) from None
    if 400 <= response.status_code < 500 and response.headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE):
        raise PeerProblem(response)
    raise ProblemError(unavailable_status, f"{slug_prefix}-unavailable", f"The {peer_name} did not answer", f"it answered {response.status_code}")
