"""Kafka topic names, in one place."""

from __future__ import annotations

NATIONAL_IDENTITY = "jukinet.national.identity"
PROVISIONS = "jukinet.provisions"
DEAD_LETTER = "jukinet.deadletter"


def prefecture_identity(prefecture_code: str) -> str:
    return f"jukinet.pref.{prefecture_code}.identity"


def cs_inbox(municipality_code: str) -> str:
    return f"jukinet.cs.{municipality_code}.inbox"


def agency_push(agency_pseudonym: str) -> str:
    return f"jukinet.push.{agency_pseudonym}"


#: Header names carried on every record besides the W3C trace context.
HEADER_MESSAGE_KIND = "jukinet-kind"
HEADER_REFUSAL_REASON = "jukinet-refusal-reason"
HEADER_SOURCE_TOPIC = "jukinet-source-topic"
#: Every record is signed by the node that produced it (services/common/message_signing.py).
HEADER_SIGNER = "jukinet-signer"  # key id: <party>:<fingerprint of its public key>
HEADER_MESSAGE_ID = "jukinet-message-id"  # a fresh UUID per record: a replay is told by it
HEADER_SIGNED_AT = "jukinet-signed-at"  # seconds since the epoch
HEADER_SIGNATURE = "jukinet-signature"  # base64url Ed25519 signature
