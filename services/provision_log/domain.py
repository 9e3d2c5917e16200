"""Rules of the provision log as plain Python: what a leaf holds, who may
record an incident, and when an entry expires. No I/O."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts.provision import ProvisionRecord
from contracts.transparency import IncidentKind, IncidentLogEntry, ProvisionLogEntry

SALT_BYTES = 32
DEFAULT_RETENTION_YEARS = 7


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha256_b64(text: str) -> str:
    return b64(hashlib.sha256(text.encode("utf-8")).digest())


def resident_tag(salt: bytes, resident_code: str) -> str:
    """The per-entry tag that stands for the resident: unlinkable without the salt."""
    return b64(hashlib.sha256(salt + resident_code.encode("ascii")).digest())


def canonical(model) -> bytes:
    """The exact leaf text: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(model.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def provision_entry(record: ProvisionRecord, salt: bytes) -> bytes:
    """The leaf of a provision record: no names, no address, no resident code."""
    entry = ProvisionLogEntry(
        record_id=record.record_id, provided_at=record.provided_at, provider=record.provider, recipient=record.recipient,
        affair=record.affair, items=list(record.items), query_type=record.query_type,
        resident_tag=resident_tag(salt, record.resident_code), reason_sha256=sha256_b64(record.reason) if record.reason else None,
    )
    return canonical(entry)


def incident_entry(*, incident_id, reported_at: datetime, reporter: str, kind: IncidentKind, record_ids: list, explanation: str) -> bytes:
    entry = IncidentLogEntry(
        incident_id=incident_id, reported_at=reported_at, reporter=reporter, incident_kind=kind,
        record_ids=sorted(record_ids, key=str), explanation_sha256=sha256_b64(explanation),
    )
    return canonical(entry)


# --- incidents (R-LOG-2) ------------------------------------------------------------


class IncidentRefused(Exception):
    def __init__(self, slug: str, detail: str):
        super().__init__(detail)
        self.slug = slug
        self.detail = detail


@dataclass(frozen=True)
class ProvisionParties:
    record_id: str
    provider: str  # party name, e.g. "national", "pref-13"
    recipient: str  # agency id


def check_incident_reporter(reporter: str, provisions: list[ProvisionParties]) -> None:
    """Only a party to a provision may record an incident against it: the
    provider that answered, or the agency that asked."""
    for p in provisions:
        if reporter not in (p.provider, f"agency-{p.recipient}"):
            raise IncidentRefused("not-a-party-to-the-provision", f"{reporter} neither provided nor received the provision {p.record_id}")


# --- retention ----------------------------------------------------------------------


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February in a year without one
        return moment.replace(year=moment.year + years, month=3, day=1)


def expires_at(provided_at: datetime, years: int) -> datetime:
    """The moment an entry's content may be erased: ``years`` after the provision (29 Feb → 1 Mar)."""
    if years < 1:
        raise ValueError("retention is at least one year")
    return _add_years(provided_at, years)


def is_expired(provided_at: datetime, *, now: datetime, years: int) -> bool:
    return now >= expires_at(provided_at, years)



def expiry_candidates_before(now: datetime, years: int) -> datetime:
    """A bound for a database query: every expired entry is older than this (a few are not expired yet)."""
    if years < 1:
        raise ValueError("retention is at least one year")
    return _add_years(now, -years) + timedelta(days=2)
