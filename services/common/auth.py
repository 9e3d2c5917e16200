"""FastAPI dependencies that admit only callers with a valid signed token."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import Request

from services.common.problems import ProblemError
from services.common.safe_text import escaped
from services.common.tokens import PublicKeyRing, TokenRefused, VerifiedToken

NETWORK_PARTY_PREFIXES = ("national", "pref-", "cs-")


def is_network_node(party: str) -> bool:
    return party == "national" or party.startswith(("pref-", "cs-"))


#: How a refused caller is recorded: the issuer its token claims, which nothing proved.
UNVERIFIED_CALLER_PREFIX = "unverified:"


def unverified_caller(claimed_issuer: str) -> str:
    """The ``caller`` of a refusal whose token was not accepted: its claimed issuer, escaped, marked unverified."""
    return UNVERIFIED_CALLER_PREFIX + escaped(claimed_issuer, 200 - len(UNVERIFIED_CALLER_PREFIX))


def bearer_verifier(keys: PublicKeyRing, *, audience: str, allowed_issuers: Callable[[str], bool], longer_lived: Mapping[str, int] | None = None):
    """Dependency: verify the bearer token; 401 (recorded, with the issuer it claims marked unverified) otherwise.

    ``longer_lived``: the kinds of longer-lived token taken here (:meth:`PublicKeyRing.verify`)."""

    async def verify(request: Request) -> VerifiedToken:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise ProblemError(401, "unauthorized", "A signed bearer token is required")
        try:
            verified = keys.verify(header[7:].strip(), audience=audience, allowed_issuers=allowed_issuers, longer_lived=longer_lived)
        except TokenRefused as exc:
            if exc.claimed_issuer is not None:
                request.state.caller = unverified_caller(exc.claimed_issuer)
            raise ProblemError(401, "unauthorized", "The token was refused", str(exc)) from None
        request.state.caller = verified.issuer
        return verified

    return verify
