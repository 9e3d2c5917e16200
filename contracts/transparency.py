"""The verifiable provision log: what its Merkle leaves hold, the proofs it
hands out, and incidents (R-LOG-1, R-LOG-2).

A leaf is the exact UTF-8 text of one entry (:class:`ProvisionLogEntry`,
:class:`IncidentLogEntry` or :class:`ErasureLogEntry`, canonical JSON). Entries
carry the minimum: no names, no addresses, no resident code. The resident is
found by a per-entry tag, ``SHA-256(salt || resident_code)`` with a random
32-byte salt that only the resident's proof bundle carries; the stated reason
is committed to by its hash; the items are named, never copied. A
``provision/v2`` leaf also commits to the whole record the resident is shown,
``record_sha256 = SHA-256(salt || canonical record)``, so a record changed in
the log's database no longer matches its leaf. Hashes and salts are base64.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, Field, StrictInt, StrictStr, model_validator

from contracts.affairs import Item
from contracts.base import Contract
from contracts.provision import ProvisionRecord
from contracts.text import ShortCode

INCLUSION_PROOF_FORMAT = "jukinet-inclusion-proof/v2"

Base64Hash = Annotated[StrictStr, Field(min_length=44, max_length=44, pattern=r"^[A-Za-z0-9+/]{43}=$")]


class ProvisionLogEntry(Contract):
    """The leaf of one provision record.

    ``provision/v2`` (every leaf appended since issue 18) commits to the whole record by
    ``record_sha256``; ``provision/v1`` leaves (appended before) commit to the fields below only,
    not to the recipient's and the affair's names nor to the other fields of the record.
    """

    kind: Literal["provision/v1", "provision/v2"] = "provision/v2"
    record_id: UUID
    provided_at: datetime
    provider: ShortCode
    recipient: ShortCode
    affair: ShortCode
    items: list[Item]
    query_type: str
    resident_tag: Base64Hash  # SHA-256(salt || resident_code)
    reason_sha256: Base64Hash | None = None  # SHA-256 of the stated reason (UTF-8)
    record_sha256: Base64Hash | None = None  # v2: SHA-256(salt || canonical record), the record as the resident sees it

    @model_validator(mode="after")
    def _commitment_by_version(self):
        if (self.kind == "provision/v2") != (self.record_sha256 is not None):
            raise ValueError("a provision/v2 entry commits to its record (record_sha256); a provision/v1 entry does not")
        return self


class IncidentKind(StrEnum):
    wrong_lookup = "wrong-lookup"  # 誤った照会
    wrong_provision = "wrong-provision"  # 誤った提供


class IncidentLogEntry(Contract):
    """The leaf of one incident: which provisions it concerns; the explanation by its hash."""

    kind: Literal["incident/v1"] = "incident/v1"
    incident_id: UUID
    reported_at: datetime
    reporter: ShortCode
    incident_kind: IncidentKind
    record_ids: list[UUID]
    explanation_sha256: Base64Hash


class ErasureLogEntry(Contract):
    """The leaf that records an erasure by retention: the leaves whose content was erased.

    ``leaf_ranges`` are half-open ``[start, end)`` ranges of leaf indexes. An entry-less leaf is
    accepted by an audit only when an erasure leaf after it names it.
    """

    kind: Literal["erasure/v1"] = "erasure/v1"
    erased_at: datetime
    retention_years: StrictInt
    leaf_ranges: list[tuple[StrictInt, StrictInt]]


def _no_control_characters(value: str) -> str:
    if any(ord(c) < 0x20 and c not in "\n" or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("the explanation contains control characters")
    if not value.strip():
        raise ValueError("the explanation is empty")
    return value


Explanation = Annotated[StrictStr, Field(min_length=1, max_length=2000), AfterValidator(_no_control_characters)]


class IncidentReport(Contract):
    """An operator records an incident against specific provisions (``POST /v1/incidents``)."""

    kind: IncidentKind
    record_ids: list[UUID] = Field(min_length=1, max_length=100)
    explanation: Explanation  # shown to the resident as written


class IncidentView(Contract):
    incident_id: UUID
    reported_at: datetime
    reporter: str
    kind: IncidentKind
    explanation: str


class IncidentRecorded(IncidentView):
    record_ids: list[UUID]
    leaf_index: int


class RecordStatus(StrEnum):
    """What the log proves about a record (or an incident) shown to the resident."""

    verified = "verified"  # the stored record is the one its leaf commits to, and the leaf is under the newest signed checkpoint
    pending = "pending"  # matches its leaf; no signed checkpoint covers the leaf yet (normally for about a second)
    record_altered = "record-altered"  # the stored record differs from the one its leaf commits to
    record_missing = "record-missing"  # the leaf is there, the stored record is gone
    not_in_signed_log = "not-in-signed-log"  # the leaf does not prove under the newest signed checkpoint (leaf, tree or checkpoint altered)
    index_mismatch = "index-mismatch"  # the log files this leaf under the resident, but the leaf's tag says otherwise


class ResidentIncident(Contract):
    """An incident recorded against one of the resident's provisions, as its leaf proves it.

    ``explanation`` is given only when the stored text is the one the leaf commits to.
    """

    incident_id: UUID
    leaf_index: int
    verified: bool
    status: RecordStatus
    problem: str | None = None
    reported_at: datetime | None = None
    reporter: str | None = None
    kind: IncidentKind | None = None
    explanation: str | None = None


class ResidentProvision(Contract):
    """One leaf of the resident's, and the stored record only if it matches the leaf.

    ``record`` is null unless the stored record is the one the leaf commits to (``verified``, or
    ``pending`` a checkpoint); ``logged`` is what the leaf itself says (null when the leaf does not
    prove). ``unbound_fields``: fields of the record a ``provision/v1`` leaf does not commit to.
    """

    record_id: UUID
    leaf_index: int
    leaf_format: str | None = None
    verified: bool
    status: RecordStatus
    problem: str | None = None
    record: ProvisionRecord | None = None
    logged: ProvisionLogEntry | None = None
    unbound_fields: list[str] = []
    incidents: list[ResidentIncident] = []


class ResidentProvisionList(Contract):
    """The resident's own provisions (their leaves in the log), newest first, with their incidents."""

    resident_code: str
    records: list[ResidentProvision]


class IncidentProof(Contract):
    """An incident leaf naming the record, proved under the same checkpoint as the record."""

    incident_id: UUID
    leaf_index: StrictInt
    entry: str  # the exact leaf text
    inclusion_path: list[Base64Hash]
    explanation: str | None = None  # the stored text (null when gone); its hash is in the entry


class InclusionProof(Contract):
    """Everything the offline verifier needs to check one record (``python -m services.provision_log.verify inclusion``).

    v2 bundles carry the stored ``record``, checked against the leaf's ``record_sha256`` (or, for a
    ``provision/v1`` leaf, against the fields it commits to), and the incident leaves naming it.
    """

    format: Literal["jukinet-inclusion-proof/v1", "jukinet-inclusion-proof/v2"] = INCLUSION_PROOF_FORMAT
    record_id: UUID
    leaf_index: StrictInt
    tree_size: StrictInt
    entry: str  # the exact leaf text
    resident_code: str | None = None
    resident_tag_salt: str | None = None  # base64, 32 bytes
    reason: str | None = None
    inclusion_path: list[Base64Hash]
    checkpoint: str  # the signed checkpoint of tree_size
    record: ProvisionRecord | None = None  # v2: the stored record, as the resident is shown it
    incidents: list[IncidentProof] = []


class ConsistencyProof(Contract):
    first_size: StrictInt
    second_size: StrictInt
    path: list[Base64Hash]


class LogLeaf(Contract):
    leaf_index: int
    leaf_hash: Base64Hash
    entry: str | None  # None once the entry expired (its hash stays)
    #: SHA-256 of the entry that the log's stored rows make now (the record or incident, the salt, the
    #: resident index): equal to SHA-256(entry) while they match the leaf; None when no row is stored
    #: (an erased or an erasure leaf, or a row that is gone)
    stored_sha256: Base64Hash | None = None


class LogLeaves(Contract):
    """A range of leaves, for auditors who recompute the tree (``verify log``)."""

    start: int
    tree_size: int
    leaves: list[LogLeaf]
    records_without_leaf: int | None = None  # stored records no leaf commits to (on the page starting at 0)


class InclusionPaths(Contract):
    """The inclusion proof of every leaf of a range, as the log's stored tree gives them (``verify audit``)."""

    tree_size: int
    start: int
    paths: list[list[Base64Hash]]
