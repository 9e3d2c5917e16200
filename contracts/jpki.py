"""公的個人認証 (JPKI): certificates the national server issues as certification
authority, their status, signed filings and the identity-assurance ledger.

The key pair is generated on the resident's card: only the public key crosses
a boundary. A certificate never carries the resident code or the individual
number; the serial number identifies the holder, and only the national server
can resolve it, inside the holder's own signed procedure (R-ONL-5).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StrictStr, model_validator

from contracts.base import BIGINT_MAX, Contract
from contracts.identifiers import ResidentCode
from contracts.identity import Sex
from contracts.text import ShortCode

_PEM_BODY = r"\r?\n[A-Za-z0-9+/=\r\n]+"

#: A SubjectPublicKeyInfo in PEM (the card's public key).
PublicKeyPem = Annotated[StrictStr, Field(min_length=60, max_length=4000, pattern=rf"^-----BEGIN PUBLIC KEY-----{_PEM_BODY}-----END PUBLIC KEY-----\r?\n?$")]
#: An X.509 certificate in PEM.
CertificatePem = Annotated[StrictStr, Field(min_length=60, max_length=12000, pattern=rf"^-----BEGIN CERTIFICATE-----{_PEM_BODY}-----END CERTIFICATE-----\r?\n?$")]
#: Standard base64 (RFC 4648 §4, with padding, no line breaks).
Base64Text = Annotated[StrictStr, Field(pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
#: A certificate serial number in decimal (up to 159 bits: too large for a JSON number).
SerialNumber = Annotated[StrictStr, Field(min_length=1, max_length=49, pattern=r"^[1-9][0-9]*$")]


class CertificateKind(StrEnum):
    signing = "signing"  # 署名用電子証明書: carries the four basic items
    authentication = "authentication"  # 利用者証明用電子証明書: carries no personal item


class CertificateState(StrEnum):
    good = "good"
    revoked = "revoked"
    unknown = "unknown"  # not issued by this CA


class RevocationReason(StrEnum):
    basic_items_changed = "basic_items_changed"  # name, birth date, sex or address changed (signing only)
    deceased = "deceased"
    removed = "removed"  # 職権消除, 国外転出 and other removals from the register
    superseded = "superseded"  # a new certificate of the same kind was issued


class AssuranceEventKind(StrEnum):
    online_procedure = "online_procedure"  # a procedure done online with the card, no visit
    in_person_check = "in_person_check"  # identity checked face to face at a counter


class CertificateIssuanceRequest(Contract):
    """The counter asks for one certificate over a public key generated on the card (CS → national)."""

    resident_code: ResidentCode
    kind: CertificateKind
    public_key_pem: PublicKeyPem
    in_person: bool = True  # handed over at the counter (resets the online count); False for a renewal signed online
    #: the version of the person the asking CS holds (set by the CS): the national server issues only
    #: once it holds that version too, so the certificate states the latest items and no change still
    #: on its way up revokes it a moment later
    known_version: int | None = Field(default=None, ge=1, le=BIGINT_MAX)


class CardPublicKeys(Contract):
    """Counter staff at the RRS: the public keys the card generated, one per certificate wanted."""

    signing_public_key_pem: PublicKeyPem | None = None
    authentication_public_key_pem: PublicKeyPem | None = None

    @model_validator(mode="after")
    def _at_least_one(self):
        if self.signing_public_key_pem is None and self.authentication_public_key_pem is None:
            raise ValueError("give at least one public key")
        return self


class IssuedCertificate(Contract):
    serial: SerialNumber
    kind: CertificateKind
    certificate_pem: CertificatePem
    not_before: datetime
    not_after: datetime


class IssuedCertificates(Contract):
    resident_code: ResidentCode
    certificates: list[IssuedCertificate]


class CertificateStatus(Contract):
    """What OCSP says, as JSON; no personal item."""

    serial: SerialNumber
    status: CertificateState
    revoked_at: datetime | None = None
    reason: RevocationReason | None = None


class BasicItems(Contract):
    """基本4情報 as the signing certificate states them."""

    name: str  # 氏名, with 旧氏 and 通称 where recorded
    birth_date: date
    sex: Sex
    address: str


class SignedFiling(Contract):
    """A filing signed on the resident's card, as received by the municipality (CS → national).

    ``payload`` is the signed bytes; ``signature`` is ECDSA over SHA-256 (DER),
    RSASSA-PKCS1-v1_5 with SHA-256, or Ed25519, by the certificate's key.
    """

    certificate_pem: CertificatePem
    payload: Annotated[Base64Text, Field(min_length=4, max_length=200_000)]
    signature: Annotated[Base64Text, Field(min_length=4, max_length=2000)]
    purpose: ShortCode  # the procedure, e.g. "online-move-out"


class AssuranceState(Contract):
    """The identity-assurance ledger of one person (R-ONL-3, R-ONL-4)."""

    resident_code: ResidentCode
    consecutive_online_procedures: int  # since the last in-person check
    last_in_person_check_at: datetime | None = None
    credential_uses: int  # verified uses of the person's certificates
    last_credential_use_at: datetime | None = None


class AssuranceEvent(Contract):
    kind: AssuranceEventKind
    purpose: ShortCode | None = None  # the procedure, e.g. "online-move-in" or "jpki-issuance"


class FilingVerification(Contract):
    """A verified filing: who signed it. Only the signer's own procedure resolves the serial."""

    serial: SerialNumber
    kind: CertificateKind
    resident_code: ResidentCode
    basic_items: BasicItems | None = None  # from the certificate; none on an authentication certificate
    certificate_status: CertificateStatus
    assurance: AssuranceState
    purpose: ShortCode
    resolved_at: datetime
