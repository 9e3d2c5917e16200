"""Signed tokens between parties (private-key JWT, RFC 7523 style, EdDSA).

Every party (agency, service, municipality issuing resident credentials) has
an Ed25519 key pair. It signs short-lived tokens with its private key; the
receiver checks them against the public key it holds for that issuer. No
shared secrets, so one party cannot impersonate another.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600


def generate_key_pair(private_dir: Path, public_dir: Path, party: str) -> Path:
    """Create ``private_dir/<party>.key`` (0600) and ``public_dir/<party>.pub`` unless they exist."""
    private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_dir.mkdir(parents=True, exist_ok=True)
    private_path = private_dir / f"{party}.key"
    public_path = public_dir / f"{party}.pub"
    if not private_path.exists() or not public_path.exists():
        key = Ed25519PrivateKey.generate()
        private_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        private_path.chmod(0o600)
        public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def sign_token(key: Ed25519PrivateKey, *, issuer: str, audience: str, subject: str | None = None, lifetime_seconds: int = 300, claims: dict | None = None) -> str:
    now = int(time.time())
    payload = {"iss": issuer, "sub": subject or issuer, "aud": audience, "iat": now, "exp": now + lifetime_seconds, "jti": str(uuid.uuid4()), **(claims or {})}
    return jwt.encode(payload, key, algorithm="EdDSA")


class TokenCache:
    """A party's own tokens for its peers, each reused for a fifth of its lifetime.

    A service calls its peers many times a second (outbox relays, long polls);
    signing a fresh token for each call, and the peer verifying each, cost
    more than the call. Only plain service tokens are kept (no subject, no
    extra claims): what a token asserts for a person or a session is signed
    anew every time.
    """

    REUSE_FRACTION = 0.2

    def __init__(self, key: Ed25519PrivateKey, issuer: str):
        self._key = key
        self._issuer = issuer
        self._tokens: dict[tuple[str, int], tuple[str, float]] = {}  # (audience, lifetime) → token, reuse until

    def token_for(self, audience: str, *, subject: str | None = None, lifetime_seconds: int = 300, claims: dict | None = None) -> str:
        if subject is not None or claims:
            return sign_token(self._key, issuer=self._issuer, audience=audience, subject=subject, lifetime_seconds=lifetime_seconds, claims=claims)
        now = time.time()
        kept = self._tokens.get((audience, lifetime_seconds))
        if kept is not None and now < kept[1]:
            return kept[0]
        token = sign_token(self._key, issuer=self._issuer, audience=audience, lifetime_seconds=lifetime_seconds)
        self._tokens[(audience, lifetime_seconds)] = (token, now + lifetime_seconds * self.REUSE_FRACTION)
        return token


class TokenRefused(Exception):
    """The token is missing, malformed, expired, or not signed by a known party."""


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    subject: str
    claims: dict


#: Tokens already verified, kept until they expire: a peer sends the same token for a while
#: (:class:`TokenCache`), and checking its signature again would give the same answer.
VERIFIED_TOKENS_KEPT = 4096


class PublicKeyRing:
    """Public keys of every party, read from ``<keys_dir>/<party>.pub``."""

    def __init__(self, keys_dir: Path):
        self._dir = keys_dir
        self._cache: dict[str, Ed25519PublicKey] = {}
        self._verified: dict[tuple[str, str], VerifiedToken] = {}  # (token, audience) → what its signature proved

    def key_for(self, party: str) -> Ed25519PublicKey | None:
        if party in self._cache:
            return self._cache[party]
        if not all(c.isalnum() or c in "-_." for c in party) or party.startswith("."):
            return None
        path = self._dir / f"{party}.pub"
        if not path.is_file():
            return None
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            return None
        self._cache[party] = key
        return key

    def key_by_id(self, kid: str) -> Ed25519PublicKey | None:
        """The key a record's signer header names (``<party>:<fingerprint>``, services/common/message_signing.py).

        The party's current key (``<party>.pub``) if its fingerprint matches;
        otherwise a key it used before and that is still trusted during a
        rotation, kept as ``<party>.<fingerprint>.pub`` (docs/security.md, "Keys").
        """
        from services.common.message_signing import key_fingerprint

        party, _, fingerprint = kid.rpartition(":")
        if not party or len(fingerprint) != 16 or not all(c in "0123456789abcdef" for c in fingerprint):
            return None
        for name in (party, f"{party}.{fingerprint}"):
            key = self.key_for(name)
            if key is not None and key_fingerprint(key) == fingerprint:
                return key
        return None

    def verify(self, token: str, *, audience: str, allowed_issuers=None) -> VerifiedToken:
        """The token's issuer, subject and claims, if it is signed by a known party for ``audience``, unexpired,
        and its issuer is allowed here; :class:`TokenRefused` otherwise."""
        known = self._verified.get((token, audience))
        if known is not None and known.claims["exp"] > time.time():
            if allowed_issuers is not None and not allowed_issuers(known.issuer):
                raise TokenRefused(f"issuer {known.issuer} may not call this service")
            return known
        verified = self._verify_signed(token, audience=audience, allowed_issuers=allowed_issuers)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            now = time.time()
            self._verified = {k: v for k, v in self._verified.items() if v.claims["exp"] > now}
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
        self._verified[(token, audience)] = verified
        return verified

    def _verify_signed(self, token: str, *, audience: str, allowed_issuers=None) -> VerifiedToken:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"malformed token: {exc}") from None
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise TokenRefused("token names no issuer")
        if allowed_issuers is not None and not allowed_issuers(issuer):
            raise TokenRefused(f"issuer {issuer} may not call this service")
        key = self.key_for(issuer)
        if key is None:
            raise TokenRefused(f"unknown issuer {issuer}")
        try:
            claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=audience, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"token refused: {exc}") from None
        if claims["exp"] - claims["iat"] > MAX_TOKEN_LIFETIME_SECONDS:
            raise TokenRefused("token lifetime too long")
        return VerifiedToken(issuer=issuer, subject=str(claims["sub"]), claims=claims)
