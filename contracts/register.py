"""Request bodies of the municipal resident register (counter and back office).

These carry every 住民票 item, more than the network ever sees: household and
続柄, 本籍 and 筆頭者 for Japanese nationals, residence status for foreign
residents. They stay inside the municipality.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field, model_validator

from contracts.base import Contract
from contracts.identifiers import IndividualNumber, ResidentCode
from contracts.identity import Address, ChangeReason, MoveDetails, PersonName, RegistrationStatus, Sex
from contracts.text import AddressText, IsoDate, KanaText, LabelText, NameText, ReasonText, ShortCode


class Relationship(StrEnum):
    """続柄 (relationship to the head of household). Children are all 子."""

    head = "世帯主"
    spouse = "妻"
    husband = "夫"
    child = "子"
    father = "父"
    mother = "母"
    grandchild = "孫"
    sibling = "兄弟姉妹"
    relative = "親族"
    cohabitant = "同居人"
    unregistered_spouse_wife = "妻(未届)"
    unregistered_spouse_husband = "夫(未届)"


class ForeignResidentItems(Contract):
    """外国人住民: 国籍・地域, 在留資格, 在留期間 and its end, 在留カード番号."""

    nationality: NameText
    residence_status: LabelText
    period_of_stay: LabelText
    period_of_stay_ends: IsoDate
    residence_card_number: str = Field(pattern=r"^[A-Z]{2}[0-9]{8}[A-Z]{2}$")
    special_permanent_resident: bool = False


class FamilyRegisterItems(Contract):
    """本籍 and 筆頭者 (Japanese nationals only)."""

    honseki: AddressText
    hittousha: NameText


class HouseholdPlacement(Contract):
    """Where the person is placed: an existing household, or a new one they head."""

    household_id: UUID | None = None
    relationship: Relationship

    @model_validator(mode="after")
    def _new_household_needs_head(self):
        if self.household_id is None and self.relationship is not Relationship.head:
            raise ValueError("a new household must be headed by the person (relationship 世帯主)")
        return self


class RegisterResident(Contract):
    """Record a person on the register: birth (出生届) or ex-officio record (職権記載)."""

    #: 出生届, 職権記載, or 国外からの転入 of a person never registered before (a 転入 from another
    #: municipality is a MoveInFiling, from the 転出証明書情報)
    reason: Literal[ChangeReason.birth, ChangeReason.ex_officio_record, ChangeReason.move_in]
    name: PersonName
    former_surname: NameText | None = None
    former_surname_kana: KanaText | None = None
    alias: NameText | None = None
    birth_date: IsoDate
    sex: Sex
    address: Address
    household: HouseholdPlacement
    became_resident_on: IsoDate
    previous_address: AddressText | None = None
    family_register: FamilyRegisterItems | None = None
    foreign_resident: ForeignResidentItems | None = None
    notified_date: IsoDate | None = None

    @model_validator(mode="after")
    def _nationality_items(self):
        if (self.family_register is None) == (self.foreign_resident is None):
            raise ValueError("give exactly one of family_register (Japanese national) or foreign_resident")
        if self.foreign_resident is None and self.name.family_name_kana is None:
            raise ValueError("Japanese nationals are recorded with the furigana of their name")
        return self


class RecordDeath(Contract):
    death_date: IsoDate
    notified_date: IsoDate | None = None


class MoveWithin(Contract):
    """転居: a new address inside the same municipality."""

    new_address: Address
    move_date: IsoDate
    notified_date: IsoDate | None = None


class ChangeName(Contract):
    name: PersonName
    former_surname: NameText | None = None
    former_surname_kana: KanaText | None = None
    change_date: IsoDate
    notified_date: IsoDate | None = None


class CorrectRecord(Contract):
    """職権修正 or 届出による修正 of identity items; only the given items change."""

    ex_officio: bool = True
    name: PersonName | None = None
    address: Address | None = None  # e.g. a mistyped house number of a 転居
    birth_date: IsoDate | None = None
    sex: Sex | None = None
    alias: NameText | None = None
    correction_date: IsoDate
    explanation: ReasonText


class RemoveExOfficio(Contract):
    """職権消除, e.g. when a person is found not to live at the address."""

    removal_date: IsoDate
    explanation: ReasonText


class RestoreExOfficio(Contract):
    """職権回復: an erroneous removal or death recorded on this register is undone."""

    restoration_date: IsoDate
    explanation: ReasonText


class ChangeHousehold(Contract):
    """世帯変更: move the person into another household or make them head of a new one."""

    household: HouseholdPlacement
    change_date: IsoDate
    notified_date: IsoDate | None = None


class HistoryEntry(Contract):
    version: int
    reason: ChangeReason
    change_date: IsoDate
    notified_date: IsoDate | None
    recorded_at: datetime
    recorded_by: str
    explanation: str | None = None


class HouseholdMember(Contract):
    resident_code: ResidentCode
    family_name: str
    given_name: str | None
    relationship: Relationship


class ResidentRecord(Contract):
    """住民票: every item of one resident, as the municipality holds it."""

    resident_code: ResidentCode
    individual_number: IndividualNumber
    version: int
    status: RegistrationStatus
    name: PersonName
    former_surname: str | None = None
    former_surname_kana: str | None = None
    alias: str | None = None
    birth_date: IsoDate
    sex: Sex
    address: Address
    household_id: UUID
    relationship: Relationship
    head_of_household: HouseholdMember | None = None
    became_resident_on: IsoDate
    previous_address: str | None = None
    family_register: FamilyRegisterItems | None = None
    foreign_resident: ForeignResidentItems | None = None
    last_change: ChangeReason
    last_change_date: IsoDate
    pending_move: MoveDetails | None = None  # 転出予定: filed, not yet confirmed by the destination's 転入通知


class ResidentList(Contract):
    residents: list[ResidentRecord]
    truncated: bool


class PortalCredential(Contract):
    """A signed resident credential for the provision-log API (until JPKI exists)."""

    resident_code: ResidentCode
    token: str
    expires_at: datetime
    issuer: ShortCode


class IdentityCheckMethod(StrEnum):
    """How the counter checked that the person asking is the resident (本人確認書類)."""

    mynumber_card = "mynumber_card"
    driving_licence = "driving_licence"
    passport = "passport"
    residence_card = "residence_card"
    other_photo_id = "other_photo_id"  # a photo ID issued by a public body: described in ``note``
    two_documents = "two_documents"  # two documents without a photo (health insurance card and pension book): described in ``note``


class IdentityCheck(Contract):
    """What the clerk saw: the document's kind and the last four characters of its number (never the whole number)."""

    method: IdentityCheckMethod
    document_number_last4: str | None = Field(default=None, pattern=r"^[0-9A-Za-z]{4}$")
    note: LabelText | None = None

    @model_validator(mode="after")
    def described(self) -> "IdentityCheck":
        if self.method in (IdentityCheckMethod.other_photo_id, IdentityCheckMethod.two_documents) and not self.note:
            raise ValueError(f"{self.method.value}: say which documents in note")
        if self.method not in (IdentityCheckMethod.other_photo_id, IdentityCheckMethod.two_documents) and not self.document_number_last4:
            raise ValueError(f"{self.method.value}: give the last four characters of the document number")
        return self


class PortalCredentialRequest(Contract):
    """A portal credential is handed over only after an identity check, recorded with who made it."""

    identity_check: IdentityCheck


class PortalCredentialIssue(Contract):
    """One credential handed over at the counter (for the auditor)."""

    issue_id: UUID
    resident_code: ResidentCode
    issued_by: str
    issued_at: datetime
    expires_at: datetime
    method: IdentityCheckMethod
    document_number_last4: str | None
    note: str | None
