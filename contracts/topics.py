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
