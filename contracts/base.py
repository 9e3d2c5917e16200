"""The base every contract model shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """Closed, immutable model: unknown fields are refused, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=4000)


#: A W3C trace context (``traceparent``) carried with a message whose handling continues the trace it came in.
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"

#: The largest integer a PostgreSQL ``bigint`` holds: every integer taken from a caller (a path, a query, a message)
#: is bounded by it, so a number past 64 bits is refused (422) rather than failing its query (500).
BIGINT_MAX = 2**63 - 1
