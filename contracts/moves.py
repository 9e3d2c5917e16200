"""Moves between municipalities (転出・転入, 特例転入) and the messages CSs exchange for them.

In person or online, a move is two procedures at two municipalities:

1. 転出届 at A. A's record becomes 転出予定 (``moving_out``) and the network
   sees the person *in transit* from A to B. A's CS sends B's CS the
   転出証明書情報 (:class:`MoveOutCertificate`) on B's inbox topic: no paper.
2. 転入届 at B, from that certificate. B registers the person with the same
   住民票コード and 個人番号, continuing their version sequence; B's CS sends
   A's CS a 転入通知 (:class:`MoveInNotice`); A closes its record and answers
   with any discrepancy it finds (:class:`MoveInReply`, the Rückmeldung).

The certificate is municipality-to-municipality: it carries what the new
municipality needs to write the 住民票 (本籍 and 筆頭者, residence status,
続柄) and never reaches the prefecture or national servers, which see only
本人確認情報 with the move's origin and destination.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, model_validator

from contracts.base import TRACEPARENT_PATTERN, Contract
from contracts.dv import CertificateAttemptNotice, SupportMeasure, SupportMeasureAck, SupportMeasureNotice
from contracts.identifiers import LocalGovernmentCode, ResidentCode
from contracts.identity import Address, IdentityChange
from contracts.online import OnlineConfirmationNotice, OnlineFilingNotice
from contracts.register import FamilyRegisterItems, ForeignResidentItems, Relationship
from contracts.text import IsoDate, LabelText, ReasonText

MAX_PERSONS_PER_MOVE = 30


# --- what counter staff (or the online service) file at the RRS ------------------------------------------


class MoveOutFiling(Contract):
    """転出届 for one person or several members of one household (R-ONL-2), in one procedure.

    Exactly one of ``destination`` (a municipality in Japan) or
    ``destination_country`` (国外転出). When the head of household leaves
    and members stay, ``remaining_head`` names the stayer who becomes head.
    """

    resident_codes: list[ResidentCode] = Field(min_length=1, max_length=MAX_PERSONS_PER_MOVE)
    destination: Address | None = None
    destination_country: LabelText | None = None
    planned_date: IsoDate
    notified_date: IsoDate | None = None
    remaining_head: ResidentCode | None = None

    @model_validator(mode="after")
    def _one_destination(self):
        if (self.destination is None) == (self.destination_country is None):
            raise ValueError("give exactly one of destination (a municipality) or destination_country (国外転出)")
        if len(set(self.resident_codes)) != len(self.resident_codes):
            raise ValueError("a person is named twice")
        if self.remaining_head is not None and self.remaining_head in self.resident_codes:
            raise ValueError("remaining_head must be a household member who stays")
        return self


class MoveOutCancellation(Contract):
    """転出取消: the person does not move after all (only while still in transit)."""

    cancellation_date: IsoDate
    explanation: ReasonText


class MoveInPerson(Contract):
    resident_code: ResidentCode
    #: 続柄 at the new address; None keeps the one on the certificate
    relationship: Relationship | None = None


class MoveInFiling(Contract):
    """転入届 at this municipality, from the 転出証明書情報 its CS received (特例転入).

    The persons move into a new household at ``new_address`` (one of them
    becomes 世帯主), or join an existing household here (``household_id``):
    households can split on a move-out and merge on a move-in.
    """

    persons: list[MoveInPerson] = Field(min_length=1, max_length=MAX_PERSONS_PER_MOVE)
    new_address: Address
    move_date: IsoDate
    notified_date: IsoDate | None = None
    household_id: UUID | None = None

    @model_validator(mode="after")
    def _distinct(self):
        codes = [p.resident_code for p in self.persons]
        if len(set(codes)) != len(codes):
            raise ValueError("a person is named twice")
        return self


class MoveInFromAbroad(Contract):
    """国外からの転入 of a person who was registered before and left abroad: their code continues."""

    resident_code: ResidentCode
    new_address: Address
    move_date: IsoDate
    notified_date: IsoDate | None = None
    relationship: Relationship = Relationship.head
    household_id: UUID | None = None


class MoveInReviewState(StrEnum):
    open = "open"
    resolved = "resolved"


class MoveInReview(Contract):
    """A 転入届 that had no matching 転出証明書情報: flagged for staff, never registered silently."""

    review_id: UUID
    resident_codes: list[ResidentCode]
    reason: str
    filed_by: str
    filed_at: datetime
    state: MoveInReviewState


# --- CS ↔ CS messages (topic jukinet.cs.<municipality>.inbox), also RRS → own CS for the first leg -----------


class TransferredPerson(Contract):
    """One person's 転出証明書情報: the 本人確認情報 change plus the 住民票 items B needs."""

    change: IdentityChange  # the 転出 version: B continues the sequence from it
    relationship: Relationship
    was_head: bool
    family_register: FamilyRegisterItems | None = None
    foreign_resident: ForeignResidentItems | None = None
    former_surname_kana: str | None = Field(default=None, max_length=120)
    #: DV等支援措置 protecting the person: the new municipality shows them on arrival (R-DV-1)
    support_measures: list[SupportMeasure] = Field(default_factory=list, max_length=10)


class MoveOutCertificate(Contract):
    """A's CS → B's CS: 転出証明書情報 of one person of a (possibly household) 転出届."""

    kind: Literal["move-out-certificate/v1"] = "move-out-certificate/v1"
    certificate_id: UUID
    procedure_id: UUID
    municipality_code: LocalGovernmentCode  # the sender: the origin A
    destination_municipality_code: LocalGovernmentCode
    resident_code: ResidentCode
    planned_date: IsoDate
    person: TransferredPerson
    persons_in_procedure: int = Field(ge=1, le=MAX_PERSONS_PER_MOVE)
    issued_at: datetime
    from_abroad: bool = False  # built by B's CS from the national record of a returning emigrant

    @model_validator(mode="after")
    def _consistent(self):
        if self.person.change.resident_code != self.resident_code:
            raise ValueError("the certificate's change is of another person")
        return self


class MoveOutWithdrawal(Contract):
    """A's CS → B's CS: the 転出 was cancelled (転出取消); the certificate may no longer be used."""

    kind: Literal["move-out-withdrawal/v1"] = "move-out-withdrawal/v1"
    certificate_id: UUID
    municipality_code: LocalGovernmentCode  # the sender: the origin A
    destination_municipality_code: LocalGovernmentCode
    resident_code: ResidentCode
    withdrawn_at: datetime


class MoveInNotice(Contract):
    """B's CS → A's CS: 転入通知. Carries B's 転入 version so A's copies continue the sequence."""

    kind: Literal["move-in-notice/v1"] = "move-in-notice/v1"
    municipality_code: LocalGovernmentCode  # the sender: the destination B
    origin_municipality_code: LocalGovernmentCode
    resident_code: ResidentCode
    change: IdentityChange
    sent_at: datetime


class Discrepancy(Contract):
    item: Literal["name", "birth_date", "sex", "individual_number", "version"]
    origin_value: str
    destination_value: str


class MoveInReply(Contract):
    """A → B: A closed its record; any item on which A's record and B's registration differ."""

    kind: Literal["move-in-reply/v1"] = "move-in-reply/v1"
    municipality_code: LocalGovernmentCode  # the sender: the origin A
    destination_municipality_code: LocalGovernmentCode
    resident_code: ResidentCode
    closed: bool
    discrepancies: list[Discrepancy] = Field(default_factory=list, max_length=10)
    replied_at: datetime


CsInboxMessage = Annotated[
    MoveOutCertificate | MoveOutWithdrawal | MoveInNotice | MoveInReply | SupportMeasureNotice | SupportMeasureAck, Field(discriminator="kind")
]


def destination_of(message: MoveOutCertificate | MoveOutWithdrawal | MoveInNotice | MoveInReply | SupportMeasureNotice | SupportMeasureAck) -> str:
    """The municipality whose CS inbox the message goes to."""
    if isinstance(message, MoveInNotice):
        return message.origin_municipality_code
    return message.destination_municipality_code


# --- what a CS hands its own RRS (the RRS pulls; nothing calls into it) ------------------------------------


#: what the register pulls: messages of other municipalities, and online filings verified by the CS
CsNoticeMessage = Annotated[
    MoveOutCertificate | MoveOutWithdrawal | MoveInNotice | MoveInReply | OnlineFilingNotice | OnlineConfirmationNotice
    | SupportMeasureNotice | SupportMeasureAck | CertificateAttemptNotice,
    Field(discriminator="kind"),
]


class CsNotice(Contract):
    """One message for the register, as the CS keeps it, in arrival order."""

    sequence: int
    received_at: datetime
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN)  # the trace the message arrived in: the register continues it
    message: CsNoticeMessage


class CsNoticeBatch(Contract):
    notices: list[CsNotice]


class IncomingNotice(Contract):
    """A notice as counter staff see it at the register: what arrived, in a sentence, and who acknowledged it."""

    sequence: int
    kind: str
    resident_code: ResidentCode
    summary: str
    received_at: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
