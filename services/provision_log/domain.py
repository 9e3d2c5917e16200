"""Rules of the provision log as plain Python: what a leaf holds, the one
serialisation of a record that a leaf commits to, whether a stored record or
incident is the one its leaf proves, who may record an incident, and when an
entry expires. No I/O."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from contracts.provision import ProvisionRecord
from contracts.transparency import (
    ErasureLogEntry, IncidentKind, IncidentLogEntry, ProvisionLogEntry, RecordStatus, ResidentIncident, ResidentProvision,
)
from services.provision_log import checkpoint as cp
from services.provision_log import merkle

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


PROVISION_V1 = "provision/v1"
PROVISION_V2 = "provision/v2"
#: fields of a record that a provision/v1 leaf does not commit to (shown, but not proved, for old leaves)
V1_UNBOUND_FIELDS = ("recipient_name", "affair_name", "municipality_code", "bulk_job_id", "notification_id", "trace_id")


def canonical_record(record: ProvisionRecord) -> bytes:
    """The one serialisation of a provision record: every field the resident is shown (and the rest of
    the record), as canonical JSON — sorted keys, no spaces, absent fields left out, UTF-8, times as
    pydantic writes them (``2026-11-27T05:14:08.123456Z``). The portal's script rebuilds the same bytes
    from the fields it displays (``assets/verify.js``, ``canonical``)."""
    return canonical(record)


def record_commitment(salt: bytes, record: ProvisionRecord) -> str:
    """``record_sha256`` of a provision/v2 leaf: SHA-256(salt ‖ canonical record), base64. Salted, so the
    published leaf does not let anyone test guesses of the resident code or the reason."""
    return b64(hashlib.sha256(salt + canonical_record(record)).digest())


def provision_log_entry(record: ProvisionRecord, salt: bytes, *, kind: str = PROVISION_V2, resident_code: str | None = None) -> ProvisionLogEntry:
    """The leaf model of a record (``resident_code``: the code to tag, the record's own by default)."""
    return ProvisionLogEntry(
        kind=kind, record_id=record.record_id, provided_at=record.provided_at, provider=record.provider, recipient=record.recipient,
        affair=record.affair, items=list(record.items), query_type=record.query_type,
        resident_tag=resident_tag(salt, resident_code or record.resident_code), reason_sha256=sha256_b64(record.reason) if record.reason else None,
        record_sha256=record_commitment(salt, record) if kind == PROVISION_V2 else None,
    )


def provision_entry(record: ProvisionRecord, salt: bytes, *, kind: str = PROVISION_V2) -> bytes:
    """The leaf of a provision record: no names, no address, no resident code; the whole record by its salted hash."""
    return canonical(provision_log_entry(record, salt, kind=kind))


def record_problem(entry: ProvisionLogEntry, record: ProvisionRecord, salt: bytes) -> str | None:
    """None when ``record`` is the record the leaf commits to; otherwise what differs.

    A v2 leaf commits to the whole record; a v1 leaf to the fields it carries (the record's other
    fields, :data:`V1_UNBOUND_FIELDS`, cannot be checked against it)."""
    expected = provision_log_entry(record, salt, kind=entry.kind)
    if expected.model_dump(mode="json") == entry.model_dump(mode="json"):
        return None
    differing = sorted(k for k, v in expected.model_dump(mode="json").items() if entry.model_dump(mode="json").get(k) != v)
    return f"the stored record differs from the one its leaf commits to ({', '.join(differing)})"


def parse_provision_entry(text: str) -> ProvisionLogEntry | None:
    try:
        return ProvisionLogEntry.model_validate_json(text)
    except ValidationError:
        return None


def incident_entry(*, incident_id, reported_at: datetime, reporter: str, kind: IncidentKind, record_ids: list, explanation: str) -> bytes:
    entry = IncidentLogEntry(
        incident_id=incident_id, reported_at=reported_at, reporter=reporter, incident_kind=kind,
        record_ids=sorted(record_ids, key=str), explanation_sha256=sha256_b64(explanation),
    )
    return canonical(entry)


def incident_problem(entry: IncidentLogEntry, *, reported_at: datetime, reporter: str, kind: str, explanation: str) -> str | None:
    """None when the stored incident is the one its leaf commits to."""
    differing = [name for name, ok in (
        ("reported_at", entry.reported_at == reported_at), ("reporter", entry.reporter == reporter),
        ("kind", entry.incident_kind.value == kind), ("explanation", entry.explanation_sha256 == sha256_b64(explanation)),
    ) if not ok]
    return f"the stored incident differs from the one its leaf commits to ({', '.join(differing)})" if differing else None


def parse_incident_entry(text: str) -> IncidentLogEntry | None:
    try:
        return IncidentLogEntry.model_validate_json(text)
    except ValidationError:
        return None


# --- erasure markers ------------------------------------------------------------------


def index_ranges(indexes: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted half-open ranges covering exactly ``indexes``."""
    out: list[list[int]] = []
    for i in sorted(set(indexes)):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return [(a, b) for a, b in out]


def erasure_entry(*, erased_at: datetime, retention_years: int, leaf_indexes: Iterable[int]) -> bytes:
    """The leaf appended by each erasure: which leaves lost their content, when, under which retention."""
    return canonical(ErasureLogEntry(erased_at=erased_at, retention_years=retention_years, leaf_ranges=index_ranges(leaf_indexes)))


def parse_erasure_entry(text: str) -> ErasureLogEntry | None:
    try:
        return ErasureLogEntry.model_validate_json(text)
    except ValidationError:
        return None


@dataclass(frozen=True)
class StoredIncident:
    reported_at: datetime
    reporter: str
    kind: str
    explanation: str


# --- what the stored rows make now (for auditors: ``/v1/log/leaves`` ``stored_sha256``) ---------


def stored_provision_sha256(entry_text: str, payload: str | None, salt: bytes | None, indexed_code: str | None) -> str | None:
    """SHA-256 of the leaf that the stored record, salt and resident index make now; equal to the SHA-256
    of the leaf's entry while none of them was altered. None when there is no stored record."""
    entry = parse_provision_entry(entry_text)
    if payload is None:
        return None
    if entry is None or salt is None or indexed_code is None:
        return sha256_b64("no salt or resident index: " + payload)
    try:
        record = ProvisionRecord.model_validate_json(payload)
    except ValidationError:
        return sha256_b64("unreadable record: " + payload)
    if record.resident_code != indexed_code:
        return sha256_b64(f"record about {record.resident_code} filed under {indexed_code}")
    return b64(hashlib.sha256(canonical(provision_log_entry(record, salt, kind=entry.kind, resident_code=indexed_code))).digest())


def stored_incident_sha256(stored: StoredIncident | None, incident_id, record_ids: list) -> str | None:
    if stored is None:
        return None
    if stored.kind not in {k.value for k in IncidentKind}:
        return sha256_b64(f"unknown incident kind {stored.kind}")
    entry = incident_entry(incident_id=incident_id, reported_at=stored.reported_at, reporter=stored.reporter, kind=IncidentKind(stored.kind), record_ids=record_ids, explanation=stored.explanation)
    return b64(hashlib.sha256(entry).digest())


# --- what the resident is shown (the server's check; the page and the verifier repeat it) ----------


@dataclass(frozen=True)
class StoredLeaf:
    """A leaf as the log's database holds it, with what is kept beside it."""

    leaf_index: int
    record_id: str
    entry: str | None
    salt: bytes | None
    appended_at: datetime | None


@dataclass(frozen=True)
class SignedTree:
    """The newest signed checkpoint, its signature checked (``checkpoint`` None and ``problem`` set otherwise)."""

    checkpoint: cp.Checkpoint | None
    problem: str | None = None


#: how long a leaf may wait for its first checkpoint before that is a problem (checkpoints come every second)
PENDING_GRACE = timedelta(seconds=60)


def _proof_problem(leaf: StoredLeaf, tree: SignedTree, path: list[bytes] | None, now: datetime) -> tuple[RecordStatus, str] | None:
    """None when the leaf's entry proves under the signed checkpoint; else (pending or not-in-signed-log, why)."""
    if tree.problem is not None:
        return RecordStatus.not_in_signed_log, tree.problem
    if tree.checkpoint is None or leaf.leaf_index >= tree.checkpoint.size:
        if leaf.appended_at is not None and now - leaf.appended_at < PENDING_GRACE:
            return RecordStatus.pending, "no signed checkpoint covers the leaf yet"
        return RecordStatus.not_in_signed_log, "no signed checkpoint covers the leaf"
    if path is None or leaf.entry is None:
        return RecordStatus.not_in_signed_log, "the log cannot give the leaf's inclusion proof (its tree is damaged)"
    if not merkle.verify_inclusion(merkle.leaf_hash(leaf.entry.encode("utf-8")), leaf.leaf_index, tree.checkpoint.size, path, tree.checkpoint.root):
        return RecordStatus.not_in_signed_log, "the leaf does not prove under the signed checkpoint (the leaf or the tree was altered)"
    return None


def judge_incident(leaf: StoredLeaf, entry: IncidentLogEntry, stored: StoredIncident | None, tree: SignedTree, path: list[bytes] | None, now: datetime) -> ResidentIncident:
    proof = _proof_problem(leaf, tree, path, now)
    base = {"incident_id": entry.incident_id, "leaf_index": leaf.leaf_index}
    if proof is not None and proof[0] == RecordStatus.not_in_signed_log:
        return ResidentIncident(**base, verified=False, status=proof[0], problem=proof[1])
    logged = {"reported_at": entry.reported_at, "reporter": entry.reporter, "kind": entry.incident_kind}
    if stored is None:
        return ResidentIncident(**base, **logged, verified=False, status=RecordStatus.record_missing, problem="the incident's leaf is there, its stored explanation is gone")
    problem = incident_problem(entry, reported_at=stored.reported_at, reporter=stored.reporter, kind=stored.kind, explanation=stored.explanation)
    if problem is not None:
        return ResidentIncident(**base, **logged, verified=False, status=RecordStatus.record_altered, problem=problem)
    if proof is not None:
        return ResidentIncident(**base, **logged, explanation=stored.explanation, verified=False, status=proof[0], problem=proof[1])
    return ResidentIncident(**base, **logged, explanation=stored.explanation, verified=True, status=RecordStatus.verified)


def judge_provision(
    leaf: StoredLeaf, resident_code: str, stored_payload: str | None, tree: SignedTree, path: list[bytes] | None, now: datetime,
    incidents: list[ResidentIncident] = (),
) -> ResidentProvision:
    """What the resident may be shown of one of their leaves: the stored record only if it is the one
    the leaf commits to, the leaf's own content only if the leaf proves under the signed checkpoint."""
    base = {"record_id": leaf.record_id, "leaf_index": leaf.leaf_index, "incidents": list(incidents)}
    entry = parse_provision_entry(leaf.entry) if leaf.entry is not None else None
    if entry is None or leaf.salt is None or resident_tag(leaf.salt, resident_code) != entry.resident_tag or str(entry.record_id) != leaf.record_id:
        return ResidentProvision(**base, verified=False, status=RecordStatus.index_mismatch, problem="the log files this leaf under you, but the leaf's tag is not yours (the log's index or the leaf was altered)")
    base["leaf_format"] = entry.kind
    proof = _proof_problem(leaf, tree, path, now)
    if proof is not None and proof[0] == RecordStatus.not_in_signed_log:
        return ResidentProvision(**base, verified=False, status=proof[0], problem=proof[1])
    if stored_payload is None:
        return ResidentProvision(**base, logged=entry, verified=False, status=RecordStatus.record_missing, problem="the leaf is in the log, but its stored record is gone")
    try:
        record = ProvisionRecord.model_validate_json(stored_payload)
    except ValidationError:
        return ResidentProvision(**base, logged=entry, verified=False, status=RecordStatus.record_altered, problem="the stored record is unreadable")
    problem = record_problem(entry, record, leaf.salt)
    if problem is None and record.resident_code != resident_code:
        problem = "the stored record is about another resident"
    if problem is not None:
        return ResidentProvision(**base, logged=entry, verified=False, status=RecordStatus.record_altered, problem=problem)
    unbound = list(V1_UNBOUND_FIELDS) if entry.kind == PROVISION_V1 else []
    if proof is not None:
        return ResidentProvision(**base, logged=entry, record=record, unbound_fields=unbound, verified=False, status=proof[0], problem=proof[1])
    return ResidentProvision(**base, logged=entry, record=record, unbound_fields=unbound, verified=True, status=RecordStatus.verified)


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
