"""Online notifications (R-ONL-1…5): 転出届, 転入届 and 転居届 filed by the resident, signed with the
signing certificate on their card.

The resident sends an :class:`OnlineSubmission` to the CS of the municipality
concerned (the CS is the network-facing door; the register is never called).
The signed bytes are one :data:`OnlineFilingContent` as JSON. The CS has the
national CA verify the signature and resolve the serial (only inside this,
the holder's own procedure), applies the municipality's limits (filing
window, identity assurance, accepted ways of confirming residence) and hands
the filing to its register, which pulls it like any other notice. The
register answers with an :class:`OnlineFilingOutcome`; the resident follows
their filing at the CS (:class:`OnlineFilingReceipt`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, model_validator

from contracts.base import Contract
from contracts.identifiers import LocalGovernmentCode, ResidentCode
from contracts.identity import Address
from contracts.jpki import Base64Text, CertificatePem, PublicKeyPem, SerialNumber
from contracts.text import IsoDate, LabelText, NameText

MAX_MEMBERS = 10


class ResidenceConfirmation(StrEnum):
    """How actual residence at the new address is confirmed; each municipality chooses which it accepts."""

    mailed_code = "mailed_code"  # a one-time code mailed to the new address, entered online
    landlord = "landlord"  # the landlord or owner confirms; staff record it
    in_person = "in_person"  # the resident shows up at the counter once


class _Filing(Contract):
    filed_at: datetime  # signed: a filing replayed later is refused
    nonce: UUID  # signed: one filing, once
    #: household members the filer (their 世帯主) files for (R-PRV-3 proxy); empty: only the filer
    members: list[ResidentCode] = Field(default_factory=list, max_length=MAX_MEMBERS)


class OnlineMoveOut(_Filing):
    """転出届 with 転入予約: allowed from 30 days before to 10 days after the move."""

    kind: Literal["online-move-out/v1"] = "online-move-out/v1"
    destination: Address | None = None
    destination_country: LabelText | None = None  # 国外転出
    planned_date: IsoDate

    @model_validator(mode="after")
    def _one_destination(self):
        if (self.destination is None) == (self.destination_country is None):
            raise ValueError("give exactly one of destination (a municipality) or destination_country (国外転出)")
        return self


class _NewAddressFiling(_Filing):
    """A filing that registers a new address: residence there is confirmed the way the resident chose."""

    new_address: Address
    move_date: IsoDate
    confirmation: ResidenceConfirmation
    landlord_name: NameText | None = None


class OnlineMoveIn(_NewAddressFiling):
    """転入届 at the destination, from the 転出証明書情報 it already received."""

    kind: Literal["online-move-in/v1"] = "online-move-in/v1"


class OnlineMoveWithin(_NewAddressFiling):
    """転居届 within the municipality."""

    kind: Literal["online-move-within/v1"] = "online-move-within/v1"


class OnlineCertificateRenewal(Contract):
    """A new signing certificate after an address change, asked online and signed with the
    authentication certificate (利用者証明用, which survives moves): an online procedure like any other."""

    kind: Literal["online-certificate-renewal/v1"] = "online-certificate-renewal/v1"
    filed_at: datetime
    nonce: UUID
    public_key_pem: PublicKeyPem


OnlineFilingContent = Annotated[OnlineMoveOut | OnlineMoveIn | OnlineMoveWithin, Field(discriminator="kind")]


class OnlineSubmission(Contract):
    """What the resident's device sends: the signed bytes, the signature, the signing certificate."""

    certificate_pem: CertificatePem
    payload: Annotated[Base64Text, Field(min_length=4, max_length=200_000)]
    signature: Annotated[Base64Text, Field(min_length=4, max_length=2000)]


class OnlineFilingState(StrEnum):
    received = "received"  # verified by the CS, waiting for the register
    awaiting_confirmation = "awaiting_confirmation"  # residence still to be confirmed
    completed = "completed"
    refused = "refused"


class OnlineFilingReceipt(Contract):
    filing_id: UUID
    kind: str
    state: OnlineFilingState
    reason: str | None = None  # why it was refused, in words the resident can act on
    next_step: str | None = None
    updated_at: datetime


class OnlineConfirmationCode(Contract):
    code: str = Field(pattern=r"^[0-9]{6}$")


# --- CS → own register (pulled as notices) and back ---------------------------------------------------------


class OnlineFilingNotice(Contract):
    """A verified online filing for the register to carry out."""

    kind: Literal["online-filing/v1"] = "online-filing/v1"
    filing_id: UUID
    municipality_code: LocalGovernmentCode
    resident_code: ResidentCode  # the signer, resolved from the certificate serial
    serial: SerialNumber
    content: OnlineFilingContent


class OnlineConfirmationNotice(Contract):
    """The resident entered the one-time code mailed to the new address."""

    kind: Literal["online-confirmation/v1"] = "online-confirmation/v1"
    filing_id: UUID
    municipality_code: LocalGovernmentCode
    resident_code: ResidentCode
    attempt_id: UUID
    code: str = Field(pattern=r"^[0-9]{6}$")


class OnlineFilingOutcome(Contract):
    """Register → own CS: what became of an online filing."""

    kind: Literal["online-filing-outcome/v1"] = "online-filing-outcome/v1"
    filing_id: UUID
    municipality_code: LocalGovernmentCode
    resident_code: ResidentCode
    state: OnlineFilingState
    reason: str | None = Field(default=None, max_length=500)
    next_step: str | None = Field(default=None, max_length=500)
    decided_at: datetime


# --- what counter staff see at the register ----------------------------------------------------------------


class OnlineFilingView(Contract):
    filing_id: UUID
    kind: str
    filer: ResidentCode
    state: OnlineFilingState
    reason: str | None = None
    received_at: datetime
    completed_at: datetime | None = None
    confirmed_by: str | None = None


class Letter(Contract):
    """A letter in the mail room, to be posted to an address."""

    id: UUID
    resident_code: ResidentCode
    address_text: str
    subject: str
    body: str
    created_at: datetime
