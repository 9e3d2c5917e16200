"""Household provision (世帯情報, R-PRV-3).

The household stays with the municipality: its RRS sends the composition to
its own CS; an agency authorised for a household-based affair asks the
national server, which forwards the authorised request to the CS of the
person's municipality. Both record the provision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import Field, model_validator

from contracts.base import Contract
from contracts.identifiers import AgencyPseudonym, LocalGovernmentCode, ResidentCode
from contracts.provision import ProvidedName
from contracts.register import Relationship
from contracts.text import ReasonText, ShortCode


class HouseholdMemberEntry(Contract):
    resident_code: ResidentCode
    relationship: Relationship


class HouseholdComposition(Contract):
    """RRS → its CS: the current members of one household (empty when it dissolved)."""

    kind: Literal["household-composition/v1"] = "household-composition/v1"
    household_id: UUID
    municipality_code: LocalGovernmentCode
    members: list[HouseholdMemberEntry] = Field(max_length=200)
    recorded_at: datetime

    @model_validator(mode="after")
    def _each_member_once(self) -> HouseholdComposition:
        codes = [m.resident_code for m in self.members]
        if len(set(codes)) != len(codes):
            raise ValueError("a member is listed more than once")
        return self


class HouseholdRequest(Contract):
    """National server → CS: an authorised household request on behalf of an agency."""

    resident_code: ResidentCode
    agency: ShortCode
    agency_name: str = Field(max_length=200)
    affair: ShortCode
    reason: ReasonText | None = None


class HouseholdMemberAnswer(Contract):
    resident_code: ResidentCode
    relationship: Relationship
    family_name: str
    given_name: str | None = None


class HouseholdAnswer(Contract):
    """CS → national server."""

    municipality_code: LocalGovernmentCode
    members: list[HouseholdMemberAnswer]


class HouseholdQuery(Contract):
    """Agency → national server: the household of one person, for a household-based affair."""

    affair: ShortCode
    resident_code: ResidentCode | None = None
    pseudonym: AgencyPseudonym | None = None
    reason: ReasonText | None = None

    @model_validator(mode="after")
    def _exactly_one_subject(self):
        if (self.resident_code is None) == (self.pseudonym is None):
            raise ValueError("give exactly one of resident_code or pseudonym")
        return self


class ProvidedHouseholdMember(Contract):
    resident_code: str | None = None
    pseudonym: str | None = None
    name: ProvidedName
    relationship: Relationship
    head: bool


class ProvidedHousehold(Contract):
    affair: str
    members: list[ProvidedHouseholdMember]
