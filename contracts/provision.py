"""Provision to agencies (照会) and the provision records it produces.

A query is a closed union discriminated by ``type`` (as in the Haal Centraal
BRP API): anything not in the union is refused. Every query states the affair
it is for and may narrow the items with ``fields``; the answer never holds
more than the affair allows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StrictInt

from contracts.affairs import Criterion, Item
from contracts.base import Contract
from contracts.identifiers import AgencyPseudonym, IndividualNumber, LocalGovernmentCode, ResidentCode
from contracts.identity import ChangeReason, RegistrationStatus, Sex
from contracts.text import AddressText, IsoDate, KanaText, NameText, ReasonText, ShortCode


class _QueryBase(Contract):
    affair: ShortCode
    fields: list[Item] | None = Field(default=None, max_length=len(Item))
    reason: ReasonText | None = None  # the requester's stated reason, shown to the resident


class ResidentCodeCriteria(Contract):
    type: Literal["ByResidentCode"]
    resident_code: ResidentCode


class IndividualNumberCriteria(Contract):
    type: Literal["ByIndividualNumber"]
    individual_number: IndividualNumber


class PseudonymCriteria(Contract):
    """By the pseudonym the national server issued to this agency (other agencies' pseudonyms find nothing)."""

    type: Literal["ByPseudonym"]
    pseudonym: AgencyPseudonym


class BasicItemsCriteria(Contract):
    """Search by the four basic items; the family name or its furigana and the birth date are required."""

    type: Literal["ByBasicItems"]
    family_name: NameText | None = None
    given_name: NameText | None = None
    family_name_kana: KanaText | None = None
    given_name_kana: KanaText | None = None
    birth_date: IsoDate
    sex: Sex | None = None
    address_contains: AddressText | None = None
    limit: StrictInt = Field(default=10, ge=1, le=50)


# An interactive query is what identifies the person plus the affair, fields and stated reason;
# a bulk job carries those once for the whole file, so its rows are the criteria alone.
class ByResidentCode(ResidentCodeCriteria, _QueryBase):
    pass


class ByIndividualNumber(IndividualNumberCriteria, _QueryBase):
    pass


class ByPseudonym(PseudonymCriteria, _QueryBase):
    pass


class ByBasicItems(BasicItemsCriteria, _QueryBase):
    pass


PersonQuery = Annotated[ByResidentCode | ByIndividualNumber | ByPseudonym | ByBasicItems, Field(discriminator="type")]

#: The person criteria of every query (the bulk rows are these models themselves).
CRITERIA_MODELS = (ResidentCodeCriteria, IndividualNumberCriteria, PseudonymCriteria, BasicItemsCriteria)
#: Members of a query that select nobody: its kind, the size of the answer, and the per-query members.
NOT_CRITERIA = frozenset({"type", "limit", *_QueryBase.model_fields})


def criteria_of(query: Contract) -> frozenset[Criterion]:
    """The criteria a query (interactive, or a bulk row) sets. A member that is neither a criterion
    nor in :data:`NOT_CRITERIA` raises ValueError: a new criterion must be mapped to its item first."""
    return frozenset(Criterion(name) for name, value in query if name not in NOT_CRITERIA and value is not None)


class ProvidedName(Contract):
    family_name: str
    given_name: str | None = None


class ProvidedKana(Contract):
    family_name_kana: str | None = None
    given_name_kana: str | None = None


class ProvidedAddress(Contract):
    municipality_code: str
    text: str


class ProvidedChange(Contract):
    reason: ChangeReason
    change_date: IsoDate


class ProvidedPerson(Contract):
    """One person as provided: only the items the affair (and ``fields``) allow are set."""

    resident_code: str | None = None
    pseudonym: str | None = None  # for affairs that do not need the resident code
    individual_number: str | None = None
    name: ProvidedName | None = None
    name_kana: ProvidedKana | None = None
    former_surname: str | None = None
    alias: str | None = None
    birth_date: IsoDate | None = None
    sex: Sex | None = None
    address: ProvidedAddress | None = None
    status: RegistrationStatus | None = None
    change: ProvidedChange | None = None
    #: a DV support measure protects the person (always delivered); the address is then given only
    #: for affairs that require it
    protected: bool = False


class QueryResult(Contract):
    affair: str
    items: list[Item]
    persons: list[ProvidedPerson]


class ProvisionRecord(Contract):
    """One provision of one person's information to one party (R-LOG-1).

    Carries the minimum: the items are named, never copied.
    """

    kind: Literal["provision-record/v1"] = "provision-record/v1"
    record_id: UUID
    provided_at: datetime
    provider: ShortCode  # e.g. "national" or "pref-13"
    recipient: ShortCode  # agency id
    recipient_name: str
    affair: ShortCode
    affair_name: str
    items: list[Item]
    resident_code: ResidentCode
    municipality_code: LocalGovernmentCode | None = None
    reason: str | None = None
    query_type: str
    bulk_job_id: UUID | None = None
    notification_id: UUID | None = None
    trace_id: str | None = None


class WithheldRecord(Contract):
    """A provision the log holds for the resident whose stored record is not served: it does not match its leaf."""

    record_id: UUID
    leaf_index: int
    status: str  # see contracts.transparency.RecordStatus
    problem: str


class ProvisionRecordList(Contract):
    """The resident's records that match their leaves in the log; the others are listed as withheld."""

    resident_code: str
    records: list[ProvisionRecord]
    withheld: list[WithheldRecord] = []
