"""Push notifications sealed to their agency (contracts/push_encryption.py, HPKE RFC 9180): only the agency's key opens a
record, and only where it was put — under its record key, on its topic, for its agency, at its feed position; a record
altered in any byte does not open; and none of the person's data is in the clear."""

from __future__ import annotations

import base64
import json
import uuid
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from contracts import topics
from contracts.push import ChangeNotification, EncryptedNotification
from contracts.push_encryption import (
    AEAD_CHACHA20_POLY1305, NotificationUnreadable, binding, decrypt_notification, encrypt_notification, key_id, open_record,
)
from services.common.encryption_keys import EncryptionKeyRing, encryption_key_paths, generate_encryption_key_pair, load_encryption_private_key
from services.common.tokens import generate_key_pair

AGENCY = "pension-service"
TOPIC = topics.agency_push(AGENCY)


def _notification(sequence: int = 7) -> dict:
    return {
        "kind": "change-notification/v1", "notification_id": str(uuid.uuid4()), "sequence": sequence, "agency": AGENCY, "affair": "national-pension",
        "subject": "12345678901", "type": "move", "version": 2, "change_date": "2026-12-01",
        "person": {"resident_code": "12345678901", "name": {"family_name": "山田", "given_name": "花子"}, "address": {"text": "東京都千代田区霞が関一丁目2番3号"}},
        "corrects": None, "delivered_at": "2026-12-07T21:00:00Z",
    }


@pytest.fixture
def agency_key():
    return X25519PrivateKey.generate()


def _seal(key, notification, *, record_key="follow-1", **options):
    return encrypt_notification(key.public_key(), notification, topic=TOPIC, key=record_key, **options)


def _record(value: dict, *, key="follow-1", topic=TOPIC):
    return SimpleNamespace(topic=topic, key=key.encode(), value=json.dumps(value).encode())


def test_the_agency_opens_its_record_and_gets_the_notification_back(agency_key):
    notification = _notification()
    sealed = _seal(agency_key, notification)
    assert decrypt_notification(agency_key, _record(sealed), agency=AGENCY) == notification
    # the record fits its contract, and names the key it is sealed to
    record = EncryptedNotification.model_validate(sealed)
    assert record.key_id == key_id(agency_key.public_key()) and record.notification_id == uuid.UUID(notification["notification_id"]) and record.sequence == 7
    assert (record.kem_id, record.kdf_id, record.aead_id) == (0x20, 1, 1)


def test_chacha20_poly1305_records_open_too(agency_key):
    notification = _notification()
    sealed = _seal(agency_key, notification, aead_id=AEAD_CHACHA20_POLY1305)
    assert sealed["aead_id"] == 3 and decrypt_notification(agency_key, _record(sealed), agency=AGENCY) == notification


def test_the_persons_data_is_nowhere_in_the_clear(agency_key):
    notification = _notification()
    raw = json.dumps(_seal(agency_key, notification)).encode()
    for clear in ("12345678901", "山田", "花子", "霞が関", "national-pension", "move"):
        assert clear.encode() not in raw and json.dumps(clear).encode()[1:-1] not in raw, clear


def test_another_agencys_key_does_not_open_it(agency_key):
    sealed = _seal(agency_key, _notification())
    other = X25519PrivateKey.generate()
    with pytest.raises(NotificationUnreadable, match="sealed to key"):
        decrypt_notification(other, _record(sealed), agency=AGENCY)
    with pytest.raises(NotificationUnreadable):
        decrypt_notification(other, _record(sealed), agency="mofa-passport")


@pytest.mark.parametrize("moved", [
    {"key": "follow-2"},  # under another record key
    {"topic": topics.agency_push("mofa-passport")},  # to another topic
])
def test_a_record_moved_elsewhere_does_not_open(agency_key, moved):
    sealed = _seal(agency_key, _notification())
    with pytest.raises(NotificationUnreadable, match="moved"):
        decrypt_notification(agency_key, _record(sealed, **moved), agency=AGENCY)


def test_a_record_read_as_another_agency_does_not_open(agency_key):
    sealed = _seal(agency_key, _notification())
    with pytest.raises(NotificationUnreadable, match="moved"):
        decrypt_notification(agency_key, _record(sealed), agency="mofa-passport")


@pytest.mark.parametrize("field, value", [("sequence", 8), ("notification_id", str(uuid.uuid4())), ("key_id", "0123456789abcdef")])
def test_a_ciphertext_given_another_feed_position_id_or_recipient_key_id_does_not_open(agency_key, field, value):
    sealed = {**_seal(agency_key, _notification()), field: value}
    with pytest.raises(NotificationUnreadable):
        decrypt_notification(agency_key, _record(sealed), agency=AGENCY)


def test_a_ciphertext_swapped_into_another_record_does_not_open(agency_key):
    first, second = _seal(agency_key, _notification(1), record_key="follow-1"), _seal(agency_key, _notification(2), record_key="follow-1")
    spliced = {**second, "enc": first["enc"], "ciphertext": first["ciphertext"]}
    with pytest.raises(NotificationUnreadable):
        decrypt_notification(agency_key, _record(spliced), agency=AGENCY)


def test_no_field_of_a_record_can_be_changed_and_the_record_still_open(agency_key):
    sealed = _seal(agency_key, _notification())
    for field, value in sealed.items():
        changed = value + 1 if isinstance(value, int) else ("A" if value[0] != "A" else "B") + value[1:]
        with pytest.raises(NotificationUnreadable):
            decrypt_notification(agency_key, _record({**sealed, field: changed}), agency=AGENCY)
    assert decrypt_notification(agency_key, _record(sealed), agency=AGENCY)


def _flip(text: str, at: int) -> str:
    data = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    data[at] ^= 0x01
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


@pytest.mark.parametrize("field, at", [("ciphertext", 0), ("ciphertext", -1), ("enc", 0), ("enc", 31)])
def test_a_tampered_record_does_not_open(agency_key, field, at):
    sealed = _seal(agency_key, _notification())
    with pytest.raises(NotificationUnreadable):
        decrypt_notification(agency_key, _record({**sealed, field: _flip(sealed[field], at)}), agency=AGENCY)


def test_a_truncated_or_foreign_record_is_unreadable_not_a_crash(agency_key):
    sealed = _seal(agency_key, _notification())
    for value in ({**sealed, "ciphertext": sealed["ciphertext"][:10]}, {**sealed, "aead_id": 2}, {**sealed, "kind": "change-notification/v1"}, {"kind": sealed["kind"]}):
        with pytest.raises(NotificationUnreadable):
            decrypt_notification(agency_key, _record(value), agency=AGENCY)
    with pytest.raises(NotificationUnreadable):
        open_record(agency_key, b"not json", topic=TOPIC, key=b"follow-1", agency=AGENCY)


def test_the_binding_is_a_json_array_any_hpke_library_can_rebuild():
    info = binding(topic=TOPIC, agency=AGENCY, key_id="0123456789abcdef", key="f", notification_id="n", sequence=3)
    assert json.loads(info) == ["jukinet-push/v1", TOPIC, AGENCY, "0123456789abcdef", "f", "n", 3]


def test_what_the_national_server_seals_is_a_change_notification(agency_key):
    notification = ChangeNotification.model_validate({**_notification(), "person": {}}).model_dump(mode="json")
    opened = decrypt_notification(agency_key, _record(_seal(agency_key, notification)), agency=AGENCY)
    assert ChangeNotification.model_validate(opened).model_dump(mode="json") == notification


def test_encryption_key_pairs_sit_next_to_the_signing_keys_and_the_ring_reads_them(tmp_path):
    private, public = tmp_path / "private", tmp_path / "public"
    path = generate_encryption_key_pair(private, public, "agency-pension-service")
    assert path == private / "agency-pension-service.x25519.key" and (path.stat().st_mode & 0o777) == 0o600
    assert encryption_key_paths(private, public, "agency-pension-service")[1] == public / "agency-pension-service.x25519.pub"
    before = path.read_bytes()
    assert generate_encryption_key_pair(private, public, "agency-pension-service") == path and path.read_bytes() == before, "made once, then kept"
    ring = EncryptionKeyRing(public)
    key = load_encryption_private_key(path)
    assert key_id(ring.key_for("agency-pension-service")) == key_id(key.public_key())
    assert ring.key_for("agency-unknown") is None and ring.key_for("../private/agency-pension-service") is None
    # a signing key is not an encryption key
    generate_key_pair(private, public, "agency-signing")
    (public / "agency-signing.x25519.pub").write_bytes((public / "agency-signing.pub").read_bytes())
    assert ring.key_for("agency-signing") is None


class _Session:
    """What ``services.common.outbox.enqueue`` needs of a session: the rows added."""

    def __init__(self):
        self.rows, self.info = [], {}

    def add(self, row):
        self.rows.append(row)


def _publisher(keys_dir):
    from services.national_server.push import Push

    push = Push.__new__(Push)  # only what publishing uses
    push.encryption_keys = EncryptionKeyRing(keys_dir)
    return push


def _change_notification() -> ChangeNotification:
    return ChangeNotification.model_validate({**_notification(), "person": {"resident_code": "12345678901", "address": {"municipality_code": "131016", "text": "東京都千代田区霞が関一丁目2番3号"}}})


def test_the_national_server_puts_only_sealed_records_on_the_topic(tmp_path):
    private, public = tmp_path / "private", tmp_path / "public"
    agency_key = load_encryption_private_key(generate_encryption_key_pair(private, public, f"agency-{AGENCY}"))
    notification, session = _change_notification(), _Session()
    _publisher(public)._publish(session, notification, key="5b0f3c1e-0000-4000-8000-000000000001")
    [row] = session.rows
    assert (row.destination, row.key, row.kind) == (TOPIC, "5b0f3c1e-0000-4000-8000-000000000001", "encrypted-notification")
    assert "12345678901" not in row.payload and "霞が関" not in row.payload and "national-pension" not in row.payload
    record = SimpleNamespace(topic=row.destination, key=row.key.encode(), value=row.payload.encode())
    assert ChangeNotification.model_validate(decrypt_notification(agency_key, record, agency=AGENCY)) == notification


def test_without_the_agencys_encryption_key_nothing_goes_to_the_topic(tmp_path):
    session = _Session()
    _publisher(tmp_path / "public")._publish(session, _change_notification(), key="5b0f3c1e-0000-4000-8000-000000000001")
    assert session.rows == [], "never in the clear; the notification stays in the REST feed"
