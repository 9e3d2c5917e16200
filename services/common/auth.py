"""FastAPI dependencies that admit only callers with a valid signed token."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from services.common.problems import ProblemError
from services.common.tokens import PublicKeyRing, TokenRefused, VerifiedToken

NETWORK_PARTY_PREFIXES = ("national", "pref-", "cs-")


def is_network_node(party: str) -> bool:
    return party == "national" or party.startswith(("pref-", "cs-"))


def bearer_verifier(keys: PublicKeyRing, *, audience: str, allowed_issuers: Callable[[str], bool]):
    """Dependency: verify the bearer token; 401 (recorded) otherwise."""

    async def verify(request: Request) -> VerifiedToken:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise ProblemError(401, "unauthorized", "A signed bearer token is required")
        try:
            verified = keys.verify(header[7:].strip(), audience=audience, allowed_issuers=allowed_issuers)
        except TokenRefused as exc:
            raise ProblemError(401, "unauthorized", "The token was refused", str(exc)) from None
        request.state.caller = verified.issuer
        return verified

    return verify
