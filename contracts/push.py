"""Push-type provision (プッシュ型, R-PRV-2): follows and change notifications.

An agency follows a person for an affair; each accepted change of that person
becomes a typed notification, held for the affair's hold window so that an
erroneous entry can be corrected before it spreads. A correction or
retraction after delivery references the notification it fixes.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field, model_validator

from contracts.base import Contract
from contracts.identifiers import AgencyPseudonym, ResidentCode
from contracts.identity import ChangeReason
from contracts.provision import ProvidedPerson
from contracts.text import IsoDate, ShortCode


class NotificationType(StrEnum):
    birth = "birth"
    registration = "registration"  # 職権記載, 転入 from abroad
    move = "move"
    death = "death"
    removal = "removal"  # 職権消除
    name_change = "name_change"
    correction = "correction"
    retraction = "retraction"  # an earlier notification was wrong (職権回復 of an erroneous removal or death)
    protection_status_change = "protection_status_change"


NOTIFICATION_TYPE_OF: dict[ChangeReason, NotificationType] = {
    ChangeReason.birth: NotificationType.birth,
    ChangeReason.ex_officio_record: NotificationType.registration,
    ChangeReason.move_within: NotificationType.move,
    ChangeReason.move_in: NotificationType.move,
    ChangeReason.move_out: NotificationType.move,
    ChangeReason.death: NotificationType.death,
    ChangeReason.ex_officio_removal: NotificationType.removal,
    ChangeReason.name_change: NotificationType.name_change,
    ChangeReason.correction: NotificationType.correction,
    ChangeReason.ex_officio_correction: NotificationType.correction,
    ChangeReason.ex_officio_restoration: NotificationType.retraction,
    ChangeReason.move_out_cancellation: NotificationType.retraction,  # the announced move does not happen
}


class FollowRequest(Contract):
    """Follow one person for one affair, by resident code or by this agency's pseudonym."""

    affair: ShortCode
    resident_code: ResidentCode | None = None
    pseudonym: AgencyPseudonym | None = None
    until: IsoDate | None = None

    @model_validator(mode="after")
    def _exactly_one_subject(self):
        if (self.resident_code is None) == (self.pseudonym is None):
            raise ValueError("give exactly one of resident_code or pseudonym")
        return self


class Follow(Contract):
    follow_id: UUID
    affair: str
    subject: str  # resident code or pseudonym, as the agency knows the person
    until: date | None
    created_at: datetime


class FollowList(Contract):
    follows: list[Follow]


class ChangeNotification(Contract):
    kind: Literal["change-notification/v1"] = "change-notification/v1"
    notification_id: UUID
    sequence: int = Field(ge=1)  # the feed cursor
    agency: str
    affair: str
    subject: str
    type: NotificationType
    version: int
    change_date: date
    person: ProvidedPerson
    corrects: UUID | None = None  # the delivered notification this one corrects or retracts
    delivered_at: datetime


class NotificationFeed(Contract):
    notifications: list[ChangeNotification]
    next_cursor: int


class EncryptedNotification(Contract):
    """A :class:`ChangeNotification` on the agency's Kafka topic, sealed to the agency's X25519 key with HPKE (RFC 9180):
    only the agency opens it (``contracts/push_encryption.py``, docs/push.md "Reading the topic"). The record key is the
    follow's id; the notification's id and feed position are in the clear and bound into the seal."""

    kind: Literal["encrypted-notification/v1"] = "encrypted-notification/v1"
    kem_id: Literal[0x0020]  # DHKEM(X25519, HKDF-SHA256)
    kdf_id: Literal[0x0001]  # HKDF-SHA256
    aead_id: Literal[0x0001, 0x0003]  # AES-128-GCM, ChaCha20-Poly1305
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")  # the recipient's key: SHA-256 of its raw public key, first 16 hex digits
    notification_id: UUID
    sequence: int = Field(ge=1)
    enc: str = Field(pattern=r"^[A-Za-z0-9_-]{43}$")  # the encapsulated key, base64url without padding
    ciphertext: str = Field(min_length=22, max_length=262144, pattern=r"^[A-Za-z0-9_-]+$")  # base64url without padding, with the 16-byte tag
