"""DV等支援措置: support measures for victims of domestic violence, stalking and child abuse (R-DV-1…3).

A victim applies at the municipality where they are registered, with the
opinion of a supporting body (police, support centre, child guidance centre)
or a court protection order as its basis, naming the perpetrators (相手方);
co-resident family members can be covered by the same measure. The
municipality decides; a measure is valid for one year, can be extended from
one month before it expires, expires otherwise, and is cancelled at the
victim's request. Every step names who took it.

The measure travels without manual work: the home municipality's register
sends it through its CS to every municipality that holds records of the
person (the 本籍地 for the 戸籍の附票, the previous address, the destination
of a 転出), each of which acknowledges it; the CS sends a protection marker
(:class:`ProtectionMarker`, no perpetrator, no kind) up to the prefecture and
national servers, so agencies' answers carry the protection.

Certificate requests (住民票の写し, 除票, 戸籍の附票の写し, 閲覧) are checked
against the measures: a named perpetrator (or their agent) is answered as if
no record existed, and third-party requests are always reviewed by staff.
Details and decisions: docs/dv.md.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field, StrictInt, model_validator

from contracts.base import BIGINT_MAX, Contract
from contracts.identifiers import LocalGovernmentCode, ResidentCode
from contracts.identity import Address, PersonName, RegistrationStatus, Sex
from contracts.register import Relationship
from contracts.text import AddressText, IsoDate, KanaText, LabelText, NameText, ReasonText

MAX_PERPETRATORS = 10
MAX_FAMILY = 10


class MeasureKind(StrEnum):
    """Why the person needs protection (住民基本台帳事務処理要領 第6-10)."""

    dv = "dv"  # 配偶者からの暴力 (DV防止法)
    stalking = "stalking"  # ストーカー行為等 (ストーカー規制法)
    child_abuse = "child_abuse"  # 児童虐待 (児童虐待防止法)
    similar = "similar"  # その他これらに準ずる行為 (e.g. sexual violence), as the municipality recognises


class MeasureBasis(StrEnum):
    """What the need for protection rests on: a supporting body's opinion or a court order."""

    police_opinion = "police_opinion"  # 警察署長等の意見
    support_centre_opinion = "support_centre_opinion"  # 配偶者暴力相談支援センター等の意見
    child_guidance_opinion = "child_guidance_opinion"  # 児童相談所長の意見
    court_protection_order = "court_protection_order"  # 裁判所の保護命令


class MeasureStatus(StrEnum):
    applied = "applied"  # 申出受付: staff already protect the person while the decision is pending
    active = "active"  # 支援措置実施中
    expired = "expired"  # 期間満了
    cancelled = "cancelled"  # 本人の申出による終了
    refused = "refused"  # 不実施


#: statuses in which the measure protects the person at every counter
IN_FORCE = frozenset({MeasureStatus.applied, MeasureStatus.active})


class MeasureAction(StrEnum):
    applied = "applied"
    approved = "approved"
    refused = "refused"
    extended = "extended"
    expired = "expired"
    cancelled = "cancelled"
    taken_over = "taken_over"  # the person moved: the new municipality carries the measure on


class Perpetrator(Contract):
    """相手方: a person the victim must be protected from, as named in the application."""

    name: NameText  # full name; spaces between family and given name are ignored when matching
    name_kana: KanaText | None = None
    birth_date: IsoDate | None = None
    address: AddressText | None = None


class ProtectedRole(StrEnum):
    victim = "victim"
    family = "family"  # a co-resident family member covered by the same measure


class ProtectedPerson(Contract):
    """A person the measure protects, with what other municipalities need to recognise a request about them."""

    resident_code: ResidentCode
    role: ProtectedRole
    name: PersonName
    birth_date: IsoDate


class MeasureStep(Contract):
    """One step of the lifecycle: what, who, when, where."""

    action: MeasureAction
    by: str = Field(min_length=1, max_length=100)
    at: datetime
    municipality_code: LocalGovernmentCode
    note: str | None = Field(default=None, max_length=400)


class SupportMeasure(Contract):
    """One DV等支援措置 as the home municipality holds it, and as every receiving municipality sees it.

    ``revision`` counts the measure's steps: a municipality keeps the highest
    revision it received, so a late or repeated message changes nothing.
    """

    measure_id: UUID
    revision: StrictInt = Field(ge=1, le=10_000)
    protected: list[ProtectedPerson] = Field(min_length=1, max_length=1 + MAX_FAMILY)  # the victim first
    kind: MeasureKind
    basis: MeasureBasis
    basis_issuer: LabelText | None = None  # e.g. 渋谷警察署
    basis_reference: LabelText | None = None  # e.g. the opinion's number
    perpetrators: list[Perpetrator] = Field(min_length=1, max_length=MAX_PERPETRATORS)
    status: MeasureStatus
    applied_on: IsoDate
    valid_from: IsoDate | None = None
    valid_until: IsoDate | None = None  # the last day of protection
    home_municipality_code: LocalGovernmentCode  # decides, extends, cancels, expires and propagates
    honseki_municipality_code: LocalGovernmentCode | None = None  # 本籍地 on the network (戸籍の附票)
    #: every municipality the home sent the measure to: each receives every later revision
    notified_municipality_codes: list[LocalGovernmentCode] = Field(default_factory=list, max_length=100)
    history: list[MeasureStep] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _consistent(self):
        roles = [p.role for p in self.protected]
        if roles[0] is not ProtectedRole.victim or ProtectedRole.victim in roles[1:]:
            raise ValueError("the victim comes first, and only once")
        codes = [p.resident_code for p in self.protected]
        if len(set(codes)) != len(codes):
            raise ValueError("a protected person is named twice")
        if self.status is MeasureStatus.active and (self.valid_from is None or self.valid_until is None):
            raise ValueError("an active measure has its period")
        return self

    @property
    def resident_codes(self) -> list[str]:
        """Resident codes of the protected persons, the victim first."""
        return [p.resident_code for p in self.protected]

    @property
    def victim_code(self) -> str:
        return self.protected[0].resident_code


# --- what counter staff file at the register ---------------------------------------------------------------


class SupportMeasureApplication(Contract):
    """支援措置申出書: filed by the victim at the municipality where they are registered."""

    victim: ResidentCode
    family: list[ResidentCode] = Field(default_factory=list, max_length=MAX_FAMILY)  # co-resident members covered too
    kind: MeasureKind
    basis: MeasureBasis
    basis_issuer: LabelText
    basis_reference: LabelText | None = None
    perpetrators: list[Perpetrator] = Field(min_length=1, max_length=MAX_PERPETRATORS)
    #: the municipality of the 本籍 when it is on the network: it keeps the 戸籍の附票
    honseki_municipality_code: LocalGovernmentCode | None = None
    applied_on: IsoDate | None = None  # defaults to today; earlier when a paper application is recorded later
    note: ReasonText | None = None

    @model_validator(mode="after")
    def _distinct(self):
        if self.victim in self.family or len(set(self.family)) != len(self.family):
            raise ValueError("a person is named twice")
        return self


class DecisionOutcome(StrEnum):
    approve = "approve"
    refuse = "refuse"


class SupportMeasureDecision(Contract):
    """The municipality's decision on an application. Approved, the measure runs one year from ``valid_from``."""

    outcome: DecisionOutcome
    valid_from: IsoDate | None = None  # defaults to today
    explanation: ReasonText | None = None

    @model_validator(mode="after")
    def _refusal_explained(self):
        if self.outcome is DecisionOutcome.refuse and self.explanation is None:
            raise ValueError("a refusal states its reason")
        if self.outcome is DecisionOutcome.refuse and self.valid_from is not None:
            raise ValueError("a refusal has no period")
        return self


class SupportMeasureExtension(Contract):
    """延長の申出: from one month before expiry, with a renewed opinion or order."""

    basis: MeasureBasis
    basis_issuer: LabelText
    basis_reference: LabelText | None = None
    filed_on: IsoDate | None = None  # defaults to today
    note: ReasonText | None = None


class SupportMeasureCancellation(Contract):
    """終了の申出: only the victim ends the measure."""

    requested_by: ResidentCode
    cancelled_on: IsoDate | None = None
    explanation: ReasonText


# --- propagation: what the home municipality tracks, what staff see ------------------------------------------


class DeliveryRole(StrEnum):
    """Why a municipality receives the measure."""

    honseki = "honseki"  # keeps the 戸籍の附票
    previous_address = "previous_address"  # keeps the 除票 of the previous address
    destination = "destination"  # the person moves there (転出)
    notified = "notified"  # received an earlier revision: receives every later one


class DeliveryState(StrEnum):
    pending = "pending"  # sent (or about to be), no acknowledgement yet: retried with backoff
    acknowledged = "acknowledged"  # the receiving register took it
    unreachable = "unreachable"  # the municipality is not on the network: raised to staff, retried
    superseded = "superseded"  # a newer revision replaced it, or the measure moved to another home


class MeasureDelivery(Contract):
    delivery_id: UUID
    measure_id: UUID
    revision: int
    target_municipality_code: LocalGovernmentCode
    role: DeliveryRole
    state: DeliveryState
    attempts: int
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None
    next_attempt_at: datetime | None = None
    acknowledged_at: datetime | None = None
    staff_acknowledged_by: str | None = None  # the receiving municipality's staff saw it (R-DV-2)
    staff_acknowledged_at: datetime | None = None
    last_error: str | None = None


class AlertKind(StrEnum):
    measure_received = "measure_received"  # another municipality sent a measure (or a new revision of one)
    delivery_failed = "delivery_failed"  # a receiving municipality has not acknowledged: open until it does
    expiring = "expiring"  # a measure of this municipality expires soon: remind the victim
    request_refused = "request_refused"  # a perpetrator asked for a protected person's records


class SupportMeasureAlert(Contract):
    """What front-line staff must not miss (R-DV-2): open until acknowledged (or, for a failed delivery, delivered)."""

    alert_id: UUID
    kind: AlertKind
    measure_id: UUID | None = None
    resident_code: ResidentCode
    summary: str
    raised_at: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None  # a failed delivery was acknowledged by the receiving municipality
    open: bool


# --- CS ↔ CS messages (topic jukinet.cs.<municipality>.inbox), and RRS → own CS -----------------------------


class SupportMeasureNotice(Contract):
    """Home register → its CS (``destination`` = itself, to hold it and mark upward) → other CSs → their registers."""

    kind: Literal["support-measure/v1"] = "support-measure/v1"
    municipality_code: LocalGovernmentCode  # the sender: the home municipality
    destination_municipality_code: LocalGovernmentCode
    resident_code: ResidentCode  # the victim
    role: DeliveryRole | None = None  # None: for the home's own CS
    attempt: StrictInt = Field(default=1, ge=1, le=100_000)  # a resend is a new message: the broker may have lost one
    measure: SupportMeasure
    sent_at: datetime

    @model_validator(mode="after")
    def _consistent(self):
        if self.resident_code != self.measure.victim_code:
            raise ValueError("the notice's resident is not the measure's victim")
        if self.municipality_code != self.measure.home_municipality_code:
            raise ValueError("only the home municipality sends a measure")
        return self


class AckStage(StrEnum):
    received = "received"  # the register took the measure (automatic)
    staff_acknowledged = "staff_acknowledged"  # counter staff acknowledged the alert


class SupportMeasureAck(Contract):
    """Receiving register → the home: the measure (this revision) is held here."""

    kind: Literal["support-measure-ack/v1"] = "support-measure-ack/v1"
    ack_id: UUID
    municipality_code: LocalGovernmentCode  # the sender: the receiving municipality
    destination_municipality_code: LocalGovernmentCode  # the home
    resident_code: ResidentCode  # the victim
    measure_id: UUID
    revision: int = Field(ge=1, le=BIGINT_MAX)
    stage: AckStage
    by: str | None = Field(default=None, max_length=100)
    acknowledged_at: datetime


class ProtectionMarker(Contract):
    """Home CS → prefecture → national: whether a person is protected. No perpetrator, no kind: the minimum."""

    kind: Literal["protection-marker/v1"] = "protection-marker/v1"
    resident_code: ResidentCode
    municipality_code: LocalGovernmentCode  # the home
    protected: bool
    valid_until: IsoDate | None = None
    as_of: datetime  # a marker replaces an older one only


# --- certificate requests (住民票の写し等の交付請求) -----------------------------------------------------------


class CertificateType(StrEnum):
    juminhyo_copy = "juminhyo_copy"  # 住民票の写し
    removed_record = "removed_record"  # 除票の写し
    koseki_fuhyo = "koseki_fuhyo"  # 戸籍の附票の写し
    inspection = "inspection"  # 住民基本台帳の一部の写しの閲覧


class RequesterRelation(StrEnum):
    self_ = "self"  # the person themself
    household_member = "household_member"  # 同一世帯の者
    agent = "agent"  # 代理人, with a principal (the person or a household member)
    third_party = "third_party"  # 第三者 (本人等以外の者): always reviewed by staff


class PersonIdentification(Contract):
    """Who someone says they are (checked at the counter against an identity document)."""

    name: NameText
    name_kana: KanaText | None = None
    birth_date: IsoDate | None = None
    address: AddressText | None = None
    resident_code: ResidentCode | None = None


class Requester(PersonIdentification):
    relation: RequesterRelation
    principal: PersonIdentification | None = None  # for an agent: on whose behalf
    organisation: LabelText | None = None  # for a third party: e.g. a law office or a creditor
    purpose: ReasonText | None = None  # 請求事由: required of a third party

    @model_validator(mode="after")
    def _relation_items(self):
        if (self.relation is RequesterRelation.agent) != (self.principal is not None):
            raise ValueError("an agent (and only an agent) names a principal")
        if self.relation is RequesterRelation.third_party and self.purpose is None:
            raise ValueError("a third party states the purpose of the request")
        return self


class CertificateSubject(Contract):
    """Whose record is asked for: the resident code, or the name and birth date."""

    resident_code: ResidentCode | None = None
    name: NameText | None = None
    birth_date: IsoDate | None = None
    #: where the person is registered, when the request is made elsewhere (広域交付) without a resident code
    registered_in: LocalGovernmentCode | None = None

    @model_validator(mode="after")
    def _identified(self):
        if self.resident_code is None and (self.name is None or self.birth_date is None):
            raise ValueError("give the resident code, or the name and the birth date")
        return self


class CertificateRequest(Contract):
    type: CertificateType
    subject: CertificateSubject
    requester: Requester


class RequestState(StrEnum):
    """Where a request stands (staff see it; the requester hears only issued, under review or not issued)."""

    issued = "issued"
    under_review = "under_review"  # waits for a reviewer
    refusal_pending = "refusal_pending"  # refused by the DV rules (a perpetrator): waits for a reviewer to close it, like any review
    asking_home = "asking_home"  # 広域交付: the home municipality is being asked, in the background
    refused = "refused"  # closed by a reviewer (or, at the home, answered to another municipality) without a document
    not_found = "not_found"  # closed: no record
    failed = "failed"  # earlier versions: the home municipality could not be asked (広域交付)


class RequestChannel(StrEnum):
    counter = "counter"  # at this municipality's counter
    wide_area = "wide_area"  # at this counter, answered by the home municipality (広域交付)
    wide_area_at_other = "wide_area_at_other"  # at another municipality's counter, about a person of this one


class CertificateEntry(Contract):
    """The items of one person on the document issued."""

    name: PersonName
    birth_date: IsoDate
    sex: Sex
    status: RegistrationStatus
    address: str | None = None
    became_resident_on: IsoDate | None = None
    previous_address: str | None = None
    relationship: Relationship | None = None
    head_of_household: str | None = None
    honseki: str | None = None
    hittousha: str | None = None
    address_history: list[str] | None = None  # 戸籍の附票: the addresses, oldest first
    removed_on: IsoDate | None = None


class CertificateDocument(Contract):
    type: CertificateType
    issued_by: LocalGovernmentCode
    issued_at: datetime
    entries: list[CertificateEntry]


class CertificateRequestOutcome(Contract):
    """What the requester is told: the document (201/200), or "under review" (202) with the id to ask for the outcome.

    Everything not issued at once is "under review", whether the person exists,
    is protected, lives here or elsewhere, or the requester is refused by the
    DV rules; a request closed without a document reads as one "not issued"
    problem (404) at the outcome.
    """

    request_id: UUID
    state: Literal["issued", "under_review"]
    document: CertificateDocument | None = None


class CertificateRequestView(Contract):
    """A request as staff and the subject's record see it: every attempt, with what was decided and why."""

    request_id: UUID
    received_at: datetime
    type: CertificateType
    channel: RequestChannel
    subject: CertificateSubject
    subject_resident_code: ResidentCode | None = None
    requester: Requester
    state: RequestState
    reason: str | None = None  # internal: why (never told to the requester when it reveals a measure)
    protected: bool  # a measure protected the subject when the request was made
    measure_ids: list[UUID] = Field(default_factory=list)
    requesting_municipality_code: LocalGovernmentCode | None = None
    handled_by: str
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None


class ReviewDecisionKind(StrEnum):
    issue = "issue"
    refuse = "refuse"


class ReviewDecision(Contract):
    decision: ReviewDecisionKind
    reason: ReasonText


# --- 広域交付: the request at another municipality, answered by the home CS -------------------------------------


class WideAreaRequest(Contract):
    """Register → own CS → the home CS: a 住民票の写し or 附票 of a person registered elsewhere (本人・同一世帯のみ)."""

    request_id: UUID
    requesting_municipality_code: LocalGovernmentCode
    type: Literal[CertificateType.juminhyo_copy, CertificateType.koseki_fuhyo]
    subject: CertificateSubject
    requester: Requester
    requested_at: datetime


class WideAreaAnswer(Contract):
    request_id: UUID
    outcome: Literal["issued", "not_found", "refused"]
    document: CertificateDocument | None = None
    home_municipality_code: LocalGovernmentCode | None = None


class CertificateAttemptNotice(Contract):
    """Home CS → its register: a request about one of its residents was answered at another municipality."""

    kind: Literal["certificate-request-attempt/v1"] = "certificate-request-attempt/v1"
    attempt_id: UUID  # the request id at the requesting municipality
    municipality_code: LocalGovernmentCode  # the home
    requesting_municipality_code: LocalGovernmentCode
    resident_code: ResidentCode
    type: CertificateType
    requester: Requester
    outcome: Literal["issued", "refused"]
    measure_ids: list[UUID] = Field(default_factory=list)
    at: datetime


# --- online: the pre-filled move form (R-ONL-1) ------------------------------------------------------------


class OnlinePrefillRequest(Contract):
    """Signed with the signing certificate like a filing: "show me my household for the move form"."""

    kind: Literal["online-prefill/v1"] = "online-prefill/v1"
    filed_at: datetime  # signed: an old request is a replay
    nonce: UUID


class OnlinePrefillMember(Contract):
    resident_code: ResidentCode
    name: PersonName
    relationship: Relationship


class OnlinePrefill(Contract):
    """The filer's household, for the online move form.

    A relative under a support measure that does not also protect the filer is
    left out, with no trace in the answer (a count would reveal them); the CS
    logs each omission.
    """

    filer: ResidentCode
    address: Address
    members: list[OnlinePrefillMember]
