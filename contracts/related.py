"""Related municipal affairs kept with the resident register (R-REL-1).

- 住登外者 (non-resident persons): people the municipality deals with who are
  not on its register — a property-tax payer living elsewhere, a former
  resident still paying tax here. They get a record of their own; when such a
  person moves in, the record is linked to the new 住民票 so that tax and the
  register speak of the same person.
- 印鑑登録 (seal registration): a resident registers a seal impression; the
  registration is only valid while the holder is on the register, so it ends
  by itself when the holder moves out, dies or is removed.

Both stay inside the municipality: nothing here crosses the CS.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import model_validator

from contracts.base import Contract
from contracts.identifiers import IndividualNumber, LocalGovernmentCode, ResidentCode
from contracts.identity import PersonName, Sex
from contracts.text import AddressText, IsoDate, LabelText, PostalCode, ReasonText


class NonResidentReason(StrEnum):
    """Why the municipality keeps a record of someone not on its register."""

    property_tax = "property_tax"  # 固定資産税の納税義務者
    resident_tax = "resident_tax"  # 住民税（転出後の課税・事務所等所在）
    health_insurance = "health_insurance"  # 国民健康保険（住所地特例）
    pension = "pension"  # 国民年金
    other = "other"  # その他


class NonResidentStatus(StrEnum):
    active = "active"  # 住登外者として管理中
    linked = "linked"  # moved in: linked to the 住民票 named in linked_resident_code
    closed = "closed"  # no longer managed


class RegisterNonResident(Contract):
    """住登外者の登録: the person's name, reading, birth date and where they live (outside the municipality)."""

    name: PersonName
    birth_date: IsoDate
    sex: Sex | None = None
    #: known from tax affairs (番号法 allows it there); with it a later 転入 links the records by itself
    individual_number: IndividualNumber | None = None
    address_text: AddressText
    address_municipality_code: LocalGovernmentCode | None = None
    postal_code: PostalCode | None = None
    reason: NonResidentReason
    note: ReasonText | None = None


class LinkNonResident(Contract):
    """Staff link a non-resident to the 住民票 of the same person (after checking identity)."""

    resident_code: ResidentCode


class NonResident(Contract):
    non_resident_id: UUID
    number: int  # 住登外者番号, shown at the counter
    name: PersonName
    birth_date: IsoDate
    sex: Sex | None = None
    individual_number: IndividualNumber | None = None
    address_text: str
    address_municipality_code: str | None = None
    postal_code: str | None = None
    reason: NonResidentReason
    note: str | None = None
    status: NonResidentStatus
    linked_resident_code: ResidentCode | None = None
    linked_at: datetime | None = None
    linked_by: str | None = None
    registered_at: datetime
    registered_by: str


class SealStatus(StrEnum):
    registered = "registered"  # 登録中
    ended = "ended"  # 廃止・抹消


class SealEndReason(StrEnum):
    """Why a seal registration ended: the holder's own request, or the register's state (職権抹消)."""

    abolished = "abolished"  # 廃止申請 (the holder asks)
    lost = "lost"  # 亡失 (the seal or the card was lost)
    moved_out = "moved_out"  # 転出 — ends by itself
    died = "died"  # 死亡 — ends by itself
    removed = "removed"  # 職権消除 — ends by itself


#: Reasons the register applies by itself; a clerk cannot choose them.
AUTOMATIC_END_REASONS = frozenset({SealEndReason.moved_out, SealEndReason.died, SealEndReason.removed})


class RegisterSeal(Contract):
    """印鑑登録申請 of a resident: one registered seal per person at a time."""

    holder_resident_code: ResidentCode
    impression: LabelText  # 印影の説明, e.g. 「山田」丸印 直径15mm
    registered_on: IsoDate


class EndSeal(Contract):
    """印鑑登録廃止 at the holder's request or after a loss."""

    reason: SealEndReason
    ended_on: IsoDate
    explanation: ReasonText | None = None

    @model_validator(mode="after")
    def _not_automatic(self):
        if self.reason in AUTOMATIC_END_REASONS:
            raise ValueError("moved_out, died and removed are applied by the register itself")
        return self


class SealRegistration(Contract):
    registration_number: int  # 印鑑登録番号
    holder_resident_code: ResidentCode
    impression: str
    status: SealStatus
    registered_on: IsoDate
    registered_by: str
    ended_on: IsoDate | None = None
    end_reason: SealEndReason | None = None
    ended_by: str | None = None
    explanation: str | None = None
