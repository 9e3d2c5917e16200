"""The base every contract model shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """Closed, immutable model: unknown fields are refused, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=4000)
