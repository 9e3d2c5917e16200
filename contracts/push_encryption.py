"""Push notifications on Kafka, encrypted to their agency (HPKE, RFC 9180).

The broker cannot keep one agency from reading another agency's topic, so the
national server seals each notification to the agency's X25519 public key
before it leaves; only the agency's private key opens it. An agency may copy
this file as it is: it needs only the standard library and ``cryptography`` with
``hazmat.primitives.hpke`` (the network runs 50.0).

Reading a record (aiokafka ``ConsumerRecord`` or anything with ``topic``,
``key`` and ``value``)::

    from cryptography.hazmat.primitives import serialization
    private_key = serialization.load_pem_private_key(open("agency-pension-service.x25519.key", "rb").read(), password=None)
    notification = decrypt_notification(private_key, record, agency="pension-service")  # a dict: change-notification/v1

The record (``kind: encrypted-notification/v1``) carries the suite ids, the
encapsulated key ``enc`` and the ``ciphertext`` (base64url, unpadded), the id
of the recipient key, and — in the clear, as the REST feed's cursor is — the
notification's id and feed ``sequence``. Nothing else is in the clear: not the
subject (the record key is the follow's id), name, address or affair.

Binding. The seal is bound to the topic, the agency and the recipient key's
id (so a record copied to another topic or agency does not open) and to the
record key and the notification's id and feed position (so a ciphertext moved
to another record does not open); the suite is bound by HPKE itself. No field
of a record can be changed and the record still open. ``cryptography``'s one-shot HPKE (``hpke.Suite``) takes an
``info`` but no ``aad``; for a one-shot message both are authenticated alike
(``info`` enters the key schedule, a different one gives a different key and
the tag fails), so everything is bound through ``info``, a compact UTF-8 JSON
array::

    ["jukinet-push/v1", <topic>, <agency>, <key_id>, <record key>, <notification_id>, <sequence>]

with an empty ``aad``. Another RFC 9180 implementation opens a record with
mode_base, that ``info`` and an empty ``aad``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

KIND = "encrypted-notification/v1"
LABEL = "jukinet-push/v1"
#: RFC 9180 §7 identifiers: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, and the AEADs a record may use.
KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305 = 0x0001, 0x0003
_AEADS = {AEAD_AES_128_GCM: hpke.AEAD.AES_128_GCM, AEAD_CHACHA20_POLY1305: hpke.AEAD.CHACHA20_POLY1305}
#: What the national server seals with.
DEFAULT_AEAD = AEAD_AES_128_GCM
ENC_LENGTH = 32  # an X25519 public key


class NotificationUnreadable(Exception):
    """Not a record this key opens: another agency's, moved to another record or topic, altered, or malformed."""


def _suite(aead_id: int) -> hpke.Suite:
    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, _AEADS[aead_id])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key: X25519PublicKey) -> str:
    """The id of an encryption key: the first 16 hex digits of SHA-256 of its 32 raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def binding(*, topic: str, agency: str, key_id: str, key: str, notification_id: str, sequence: int) -> bytes:
    """The HPKE ``info``: to whom (topic, agency, recipient key), where (record key) and which notification (id, feed position)."""
    return json.dumps([LABEL, topic, agency, key_id, key, str(notification_id), int(sequence)], separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encrypt_notification(public_key: X25519PublicKey, notification: dict[str, Any], *, topic: str, key: str, aead_id: int = DEFAULT_AEAD) -> dict[str, Any]:
    """The record the national server puts on the agency's topic under ``key``, for a ``change-notification/v1``."""
    notification_id, sequence = str(notification["notification_id"]), int(notification["sequence"])
    recipient = key_id(public_key)
    info = binding(topic=topic, agency=notification["agency"], key_id=recipient, key=key, notification_id=notification_id, sequence=sequence)
    plaintext = json.dumps(notification, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    sealed = _suite(aead_id).encrypt(plaintext, public_key, info=info)  # enc ‖ ciphertext
    return {
        "kind": KIND, "kem_id": KEM_X25519_HKDF_SHA256, "kdf_id": KDF_HKDF_SHA256, "aead_id": aead_id, "key_id": recipient,
        "notification_id": notification_id, "sequence": sequence, "enc": _b64(sealed[:ENC_LENGTH]), "ciphertext": _b64(sealed[ENC_LENGTH:]),
    }


def open_record(private_key: X25519PrivateKey, value: bytes | str, *, topic: str, key: bytes | str, agency: str) -> dict[str, Any]:
    """The notification in one record's value, read from ``topic`` under ``key`` by ``agency``; :class:`NotificationUnreadable` otherwise."""
    try:
        record = json.loads(value)
        if record["kind"] != KIND or record["kem_id"] != KEM_X25519_HKDF_SHA256 or record["kdf_id"] != KDF_HKDF_SHA256 or record["aead_id"] not in _AEADS:
            raise NotificationUnreadable(f"not a record of this suite: {record['kind']} {record['kem_id']}/{record['kdf_id']}/{record['aead_id']}")
        key = key.decode("utf-8") if isinstance(key, bytes) else key
        info = binding(topic=topic, agency=agency, key_id=record["key_id"], key=key, notification_id=record["notification_id"], sequence=record["sequence"])
        enc, ciphertext = _unb64(record["enc"]), _unb64(record["ciphertext"])
    except NotificationUnreadable:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NotificationUnreadable(f"malformed record: {exc!r}") from None
    try:
        plaintext = _suite(record["aead_id"]).decrypt(enc + ciphertext, private_key, info=info)
    except (InvalidTag, ValueError) as exc:
        mine = key_id(private_key.public_key())
        reason = f"sealed to key {record['key_id']}, not to this key ({mine})" if record["key_id"] != mine else "altered, or moved from another record, topic or agency"
        raise NotificationUnreadable(reason) from exc
    try:  # the sender sealed these inside too; a record whose clear fields disagree with them was made by no honest sender
        notification = json.loads(plaintext)
        same = (str(notification["notification_id"]), notification["sequence"], notification["agency"]) == (str(record["notification_id"]), record["sequence"], agency)
    except (ValueError, KeyError, TypeError) as exc:
        raise NotificationUnreadable(f"the sealed content is not a notification: {exc!r}") from None
    if not same:
        raise NotificationUnreadable("the sealed notification is not the one the record names")
    return notification


def decrypt_notification(private_key: X25519PrivateKey, record: Any, *, agency: str) -> dict[str, Any]:
    """The ``change-notification/v1`` in a consumed record (``.topic``, ``.key``, ``.value``), as a dict."""
    return open_record(private_key, record.value, topic=record.topic, key=record.key or b"", agency=agency)
