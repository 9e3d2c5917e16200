"""Signed Kafka records: which node produced a record, checked before anything reads it.

The broker is a shared medium: any process that reaches it could produce to
any topic. So every record a node produces carries an Ed25519 signature made
with the node's own key (the same key ring as its tokens) over

    topic, record key, kind, signer's key id, message id, signing time, payload bytes

each length-prefixed, so no two different records share a signing input.
The payload is signed as the exact bytes sent: those bytes are the canonical
form (no re-serialisation on either side can make two parties disagree).

Headers (besides the trace context and ``jukinet-kind``):

- ``jukinet-signer``: the key id, ``<party>:<fingerprint>`` (16 hex digits of
  the SHA-256 of the raw public key), so a rotated key is told apart from
  the one before it (docs/security.md, "Keys");
- ``jukinet-message-id``: a fresh UUID per record; a consumer keeps the ids it
  took, so a record produced again byte for byte (a replay) changes nothing;
- ``jukinet-signed-at``: seconds since the epoch; a record older than the
  consumer's acceptance window, or from the future, is refused;
- ``jukinet-signature``: base64url of the 64-byte signature.

A valid signature says who produced the record. Whether that node may say
what the record says is a separate rule (:mod:`services.common.entitlement`).
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contracts.topics import HEADER_MESSAGE_ID, HEADER_MESSAGE_KIND, HEADER_SIGNATURE, HEADER_SIGNED_AT, HEADER_SIGNER
from services.common.entitlement import NotEntitled
from services.common.tokens import key_fingerprint

SIGNING_CONTEXT = b"jukinet-kafka-record/v1"
#: A record signed further ahead than this is refused (clocks of the nodes differ a little).
FUTURE_SKEW_SECONDS = 300.0


def key_id(party: str, key: Ed25519PublicKey) -> str:
    return f"{party}:{key_fingerprint(key)}"


def signing_input(*, topic: str, key: bytes, kind: str, signer: str, message_id: str, signed_at: str, value: bytes) -> bytes:
    """What is signed: every part length-prefixed, in a fixed order, after a context string."""
    parts = [topic.encode(), key, kind.encode(), signer.encode(), message_id.encode(), signed_at.encode(), value]
    return SIGNING_CONTEXT + b"".join(struct.pack(">I", len(p)) + p for p in parts)


class MessageSigner:
    """Signs the records one node produces."""

    def __init__(self, private_key: Ed25519PrivateKey, party: str):
        self._key = private_key
        self.key_id = key_id(party, private_key.public_key())

    def headers(self, *, topic: str, key: bytes, kind: str, value: bytes) -> dict[str, str]:
        message_id, signed_at = str(uuid.uuid4()), f"{time.time():.3f}"
        signature = self._key.sign(signing_input(topic=topic, key=key, kind=kind, signer=self.key_id, message_id=message_id, signed_at=signed_at, value=value))
        return {HEADER_SIGNER: self.key_id, HEADER_MESSAGE_ID: message_id, HEADER_SIGNED_AT: signed_at,
                HEADER_SIGNATURE: base64.urlsafe_b64encode(signature).decode().rstrip("=")}


class UntrustedRecord(Exception):
    """A record whose producer is not proven, or not entitled to it; ``kind`` labels the metric."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class SignedBy:
    """What a valid signature proved about one record."""

    party: str
    key_id: str
    message_id: uuid.UUID
    signed_at: float
    kind: str


def record_headers(headers) -> dict[str, bytes]:
    """Kafka headers as a dict (a header given twice is refused: which one was signed?)."""
    found: dict[str, bytes] = {}
    for name, value in headers or ():
        if name in found:
            raise UntrustedRecord("malformed-signature", f"header {name} appears twice")
        found[name] = value or b""
    return found


def verify_record(keys, *, topic: str, key: bytes | None, value: bytes | None, headers, max_age_seconds: float, now: float | None = None) -> SignedBy:
    """The signer of a record, if its signature is valid, its key known, and its time within the window.

    ``keys`` is the :class:`services.common.tokens.PublicKeyRing` of the
    network. Raises :class:`UntrustedRecord` with the reason otherwise.
    """
    found = record_headers(headers)
    missing = [h for h in (HEADER_SIGNER, HEADER_MESSAGE_ID, HEADER_SIGNED_AT, HEADER_SIGNATURE) if h not in found]
    if missing:
        raise UntrustedRecord("unsigned", f"unsigned record: no {', '.join(missing)} header")
    try:
        signer = found[HEADER_SIGNER].decode("ascii")
        message_id = uuid.UUID(found[HEADER_MESSAGE_ID].decode("ascii"))
        signed_at_text = found[HEADER_SIGNED_AT].decode("ascii")
        signed_at = float(signed_at_text)
        signature = base64.urlsafe_b64decode(found[HEADER_SIGNATURE] + b"=" * (-len(found[HEADER_SIGNATURE]) % 4))
        kind = found.get(HEADER_MESSAGE_KIND, b"").decode("utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        raise UntrustedRecord("malformed-signature", f"malformed signature headers: {exc}") from None
    public_key = keys.key_by_id(signer)
    if public_key is None:
        raise UntrustedRecord("unknown-signer", f"signed by {signer!r}, which is no key of the network")
    try:
        public_key.verify(signature, signing_input(topic=topic, key=key or b"", kind=kind, signer=signer, message_id=str(message_id),
                                                   signed_at=signed_at_text, value=value or b""))
    except InvalidSignature:
        raise UntrustedRecord("bad-signature", f"the signature of {signer} does not match the record") from None
    now = time.time() if now is None else now
    if signed_at > now + FUTURE_SKEW_SECONDS:
        raise UntrustedRecord("stale", f"signed {signed_at - now:.0f} s in the future")
    if signed_at < now - max_age_seconds:
        raise UntrustedRecord("stale", f"signed {now - signed_at:.0f} s ago, beyond the {max_age_seconds:.0f} s this consumer accepts")
    return SignedBy(party=signer.rsplit(":", 1)[0], key_id=signer, message_id=message_id, signed_at=signed_at, kind=kind)


class RecordGate:
    """What a consumer checks before a record reaches its handler: the signature, then the signer's entitlement.

    ``entitled(signer party, topic, kind, payload)`` raises
    :class:`services.common.entitlement.NotEntitled` for a record its signer
    may not produce. The payload is read here as plain JSON, for the few
    fields the rules need; the handler still validates it against its contract.
    """

    def __init__(self, keys, *, entitled, max_age_seconds: float):
        self._keys = keys
        self._entitled = entitled
        self.max_age_seconds = max_age_seconds

    def admit(self, record) -> SignedBy:
        signed = verify_record(self._keys, topic=record.topic, key=record.key, value=record.value, headers=record.headers, max_age_seconds=self.max_age_seconds)
        try:
            payload = json.loads(record.value or b"")
        except ValueError as exc:
            raise UntrustedRecord("malformed", f"the payload signed by {signed.party} is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise UntrustedRecord("malformed", f"the payload signed by {signed.party} is not a JSON object")
        try:
            self._entitled(signed.party, record.topic, signed.kind, payload)
        except NotEntitled as exc:
            raise UntrustedRecord("not-entitled", f"{exc}") from None
        return signed
