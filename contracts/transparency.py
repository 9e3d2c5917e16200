"""The verifiable provision log: what its Merkle leaves hold, the proofs it
hands out, and incidents (R-LOG-1, R-LOG-2).

A leaf is the exact UTF-8 text of one entry (:class:`ProvisionLogEntry` or
:class:`IncidentLogEntry`, canonical JSON). Entries carry the minimum: no
names, no addresses, no resident code. The resident is found by a per-entry
tag, ``SHA-256(salt || resident_code)`` with a random 32-byte salt that only
the resident's proof bundle carries; the stated reason is committed to by its
hash; the items are named, never copied. Hashes and salts are base64.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, Field, StrictInt, StrictStr

from contracts.affairs import Item
from contracts.base import Contract
from contracts.provision import ProvisionRecord
from contracts.text import ShortCode

INCLUSION_PROOF_FORMAT = "jukinet-inclusion-proof/v1"

Base64Hash = Annotated[StrictStr, Field(min_length=44, max_length=44, pattern=r"^[A-Za-z0-9+/]{43}=$")]


class ProvisionLogEntry(Contract):
    """The leaf of one provision record."""

    kind: Literal["provision/v1"] = "provision/v1"
    record_id: UUID
    provided_at: datetime
    provider: ShortCode
    recipient: ShortCode
    affair: ShortCode
    items: list[Item]
    query_type: str
    resident_tag: Base64Hash  # SHA-256(salt || resident_code)
    reason_sha256: Base64Hash | None = None  # SHA-256 of the stated reason (UTF-8)


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


class ResidentProvision(Contract):
    record: ProvisionRecord
    leaf_index: int | None = None  # None until appended to the tree
    incidents: list[IncidentView] = []


class ResidentProvisionList(Contract):
    """The resident's own provisions, newest first, with their incidents."""

    resident_code: str
    records: list[ResidentProvision]


class InclusionProof(Contract):
    """Everything the offline verifier needs to check one record (``python -m services.provision_log.verify inclusion``)."""

    format: Literal["jukinet-inclusion-proof/v1"] = INCLUSION_PROOF_FORMAT
    record_id: UUID
    leaf_index: StrictInt
    tree_size: StrictInt
    entry: str  # the exact leaf text
    resident_code: str | None = None
    resident_tag_salt: str | None = None  # base64, 32 bytes
    reason: str | None = None
    inclusion_path: list[Base64Hash]
    checkpoint: str  # the signed checkpoint of tree_size


class ConsistencyProof(Contract):
    first_size: StrictInt
    second_size: StrictInt
    path: list[Base64Hash]


class LogLeaf(Contract):
    leaf_index: int
    leaf_hash: Base64Hash
    entry: str | None  # None once the entry expired (its hash stays)


class LogLeaves(Contract):
    """A range of leaves, for auditors who recompute the tree (``verify log``)."""

    start: int
    tree_size: int
    leaves: list[LogLeaf]
