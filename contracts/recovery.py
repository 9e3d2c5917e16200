"""Snapshots, reconciliation and disaster recovery: what crosses a boundary.

- **Range digests.** Two tiers compare what they hold of an area (a set of
  municipalities) without sending it: resident codes are split into ranges by
  their leading digits, and each side gives, per range, the number of persons
  and the XOR of a 64-bit hash of each person's (code, version, status,
  municipality). Only ranges whose digests differ are split further; small
  differing ranges are compared person by person.
- **Snapshots.** A CS sends its municipality's 本人確認情報 to the tier above
  with the same digests, so only the ranges that changed since the last
  snapshot travel; the receiver seals the snapshot when its copy has the
  digest the CS announced.
- **Recovery.** After a disaster the municipality, with a token signed by its
  own key, asks the tier above for the 本人確認情報 (and its history) of
  everyone registered in it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StrictInt

from contracts.base import Contract
from contracts.identifiers import LocalGovernmentCode, ResidentCode
from contracts.identity import IdentityChange, RegistrationStatus
from contracts.text import IsoDate

#: Leading digits of resident codes: "" is every code, "12" every code starting with 12.
CodePrefix = Annotated[str, Field(pattern=r"^[0-9]{0,11}$")]
#: count and XOR of the per-person hashes of one range, "<count>:<16 hex digits>"
Digest = Annotated[str, Field(pattern=r"^[0-9]{1,12}:[0-9a-f]{16}$")]

MAX_PREFIXES = 20_000
MAX_CODES = 5_000
MAX_SNAPSHOT_ROWS = 5_000


class DigestRequest(Contract):
    """Digests of the ranges of ``length`` leading digits under each prefix, for persons of ``area``."""

    area: list[LocalGovernmentCode] = Field(min_length=1, max_length=2000)
    prefixes: list[CodePrefix] = Field(min_length=1, max_length=MAX_PREFIXES)
    length: StrictInt = Field(ge=1, le=11)


class DigestAnswer(Contract):
    """Only non-empty ranges are listed; a range missing here holds nobody."""

    digests: dict[str, Digest]


class RangeRequest(Contract):
    """Every person of ``area`` whose code starts with one of ``prefixes``."""

    area: list[LocalGovernmentCode] = Field(min_length=1, max_length=2000)
    prefixes: list[CodePrefix] = Field(min_length=1, max_length=MAX_PREFIXES)


class PersonsRequest(Contract):
    """What is held of these persons, wherever they are registered now."""

    resident_codes: list[ResidentCode] = Field(min_length=1, max_length=MAX_CODES)


class PersonState(Contract):
    """What the digests are made of: enough to tell which side is behind."""

    resident_code: ResidentCode
    version: StrictInt = Field(ge=1)
    status: RegistrationStatus
    municipality_code: LocalGovernmentCode


class PersonStates(Contract):
    persons: list[PersonState]


FindingKind = Literal["missing", "behind", "ahead", "conflict", "extra"]
FindingAction = Literal["resynced", "replayed", "reported", "failed"]


class Finding(Contract):
    """One person whose copy differed from the tier below, and what was done about it.

    ``missing``/``behind``: the copy lacks versions the tier below holds (healed);
    ``ahead``: the copy holds versions the tier below lacks (the tier below lost
    data; reported); ``conflict``: the same version with another status or
    municipality (reported); ``extra``: the tier below does not know the person.
    """

    resident_code: ResidentCode
    kind: FindingKind
    copy_version: int | None = None
    truth_version: int | None = None
    copy_state: str | None = Field(default=None, max_length=200)
    truth_state: str | None = Field(default=None, max_length=200)
    action: FindingAction
    applied: StrictInt = 0
    detail: str | None = Field(default=None, max_length=2000)


class ReconciliationResult(Contract):
    """One comparison of a copy with the tier below it, over one area."""

    id: int | None = None
    copy_node: str = Field(max_length=100)
    truth_node: str = Field(max_length=100)
    area: list[LocalGovernmentCode]
    trigger: Literal["schedule", "operator"]
    started_at: datetime
    finished_at: datetime | None = None
    ranges_compared: StrictInt = 0
    ranges_descended: StrictInt = 0
    persons_compared: StrictInt = 0
    differing: StrictInt = 0
    healed: StrictInt = 0
    reported: StrictInt = 0
    requests: StrictInt = 0
    bytes_exchanged: StrictInt = 0  # request and answer bodies of the comparison with the tier below
    outcome: Literal["consistent", "healed", "differences-reported", "failed"]
    error: str | None = Field(default=None, max_length=2000)
    findings: list[Finding] = Field(default_factory=list, max_length=MAX_CODES)


class SnapshotRow(Contract):
    resident_code: ResidentCode
    version: StrictInt = Field(ge=1)
    status: RegistrationStatus
    municipality_code: LocalGovernmentCode
    change: IdentityChange  # the change that made this version: every item the network carries


class SnapshotRanges(Contract):
    """Replace the receiver's copy of these ranges with these rows (one part of a snapshot)."""

    snapshot_id: UUID
    taken_at: datetime
    prefixes: list[CodePrefix] = Field(min_length=1, max_length=MAX_PREFIXES)
    rows: list[SnapshotRow] = Field(max_length=MAX_SNAPSHOT_ROWS)


class SnapshotSeal(Contract):
    """The snapshot is complete when the receiver's copy has this digest."""

    snapshot_id: UUID
    taken_at: datetime
    persons: StrictInt = Field(ge=0)
    digest: Digest


class SnapshotReceipt(Contract):
    snapshot_id: UUID
    municipality_code: LocalGovernmentCode
    state: Literal["receiving", "complete", "mismatch"]
    persons: StrictInt
    digest: Digest
    detail: str | None = None


class SnapshotInfo(Contract):
    """A snapshot as the sender or the receiver recorded it."""

    snapshot_id: UUID
    municipality_code: LocalGovernmentCode
    peer: str
    taken_at: datetime
    sealed_at: datetime | None = None
    persons: StrictInt
    digest: str | None = None
    ranges: StrictInt = 0
    rows: StrictInt = 0
    state: str
    detail: str | None = None


class RecoverySummary(Contract):
    """What the network can give back to a municipality (answered before anything is wiped)."""

    municipality_code: LocalGovernmentCode
    provider: str
    persons_current: StrictInt
    persons_in_snapshot: StrictInt
    snapshot_taken_at: datetime | None = None
    snapshot_state: str | None = None


class RecoveredProtection(Contract):
    """The protection marker the provider holds of a person (only ``protected: true`` ones travel back).

    The measure's details — kind, basis, 相手方 — are never carried by the network:
    the restored register treats the person as protected until staff re-enter them.
    """

    resident_code: ResidentCode
    valid_until: IsoDate | None = None
    as_of: datetime


class RecoveredPerson(Contract):
    """One line of a recovery export (NDJSON): the newest version the network holds, its history, and the
    person's protection marker when a DV support measure protects them."""

    resident_code: ResidentCode
    source: Literal["current", "snapshot"]
    current: IdentityChange
    history: list[IdentityChange]
    protection: RecoveredProtection | None = None


RECOVERY_SCOPE = "disaster-recovery"
