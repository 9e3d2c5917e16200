"""Signed Kafka records (services/common/message_signing.py) and who may produce what (services/common/entitlement.py)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from contracts import topics
from contracts.topics import HEADER_MESSAGE_KIND, HEADER_SIGNATURE, HEADER_SIGNED_AT, HEADER_SIGNER
from services.common.entitlement import NotEntitled, check_entitled
from services.common.message_signing import MessageSigner, RecordGate, UntrustedRecord, verify_record
from services.common.tokens import PublicKeyRing, generate_key_pair, key_fingerprint, load_private_key
from services.common.topology import load_topology

REPO = Path(__file__).resolve().parents[2]
WITH_TIER = load_topology(REPO / "deploy" / "topology.yaml")
WITHOUT_TIER = load_topology(REPO / "deploy" / "topology-without-prefectures.yaml")
WEEK = 7 * 24 * 3600.0


@pytest.fixture
def ring(tmp_path):
    public = tmp_path / "public"
    keys = {p: load_private_key(generate_key_pair(tmp_path / "private", public, p)) for p in ("cs-131016", "pref-13", "national", "intruder")}
    (public / "intruder.pub").unlink()
    return keys, PublicKeyRing(public), public


def record(signer: MessageSigner | None, *, topic="jukinet.pref.13.identity", key=b"12345678901", kind="identity-change", value=b'{"municipality_code": "131016"}'):
    headers = {HEADER_MESSAGE_KIND: kind}
    if signer is not None:
        headers.update(signer.headers(topic=topic, key=key, kind=kind, value=value))
    return SimpleNamespace(topic=topic, key=key, value=value, headers=[(k, v.encode()) for k, v in headers.items()])


def verify(ring_, r, **kw):
    return verify_record(ring_, topic=r.topic, key=r.key, value=r.value, headers=r.headers, max_age_seconds=kw.pop("max_age", WEEK), **kw)


def test_a_record_signed_by_a_known_node_names_its_signer(ring):
    keys, keyring, _ = ring
    signed = verify(keyring, record(MessageSigner(keys["cs-131016"], "cs-131016")))
    assert signed.party == "cs-131016" and signed.kind == "identity-change"
    assert signed.key_id == f"cs-131016:{key_fingerprint(keys['cs-131016'].public_key())}"


@pytest.mark.parametrize("change", ["topic", "key", "kind", "value", "signed_at", "signer"])
def test_any_changed_part_breaks_the_signature(ring, change):
    keys, keyring, _ = ring
    r = record(MessageSigner(keys["cs-131016"], "cs-131016"))
    headers = dict(r.headers)
    if change == "topic":
        r.topic = "jukinet.national.identity"
    elif change == "key":
        r.key = b"12345678902"
    elif change == "kind":
        headers[HEADER_MESSAGE_KIND] = b"protection-marker/v1"
    elif change == "value":
        r.value = r.value.replace(b"131016", b"131017")  # one byte
    elif change == "signed_at":
        headers[HEADER_SIGNED_AT] = f"{time.time() - 1:.3f}".encode()
    elif change == "signer":  # another node's key id over this node's signature
        headers[HEADER_SIGNER] = f"pref-13:{key_fingerprint(keys['pref-13'].public_key())}".encode()
    r.headers = list(headers.items())
    with pytest.raises(UntrustedRecord) as refused:
        verify(keyring, r)
    assert refused.value.kind == "bad-signature"


def test_unsigned_unknown_stale_and_doubled_records_are_refused_with_their_reason(ring):
    keys, keyring, _ = ring
    with pytest.raises(UntrustedRecord, match="unsigned"):
        verify(keyring, record(None))
    with pytest.raises(UntrustedRecord) as unknown:
        verify(keyring, record(MessageSigner(keys["intruder"], "intruder")))
    assert unknown.value.kind == "unknown-signer"
    with pytest.raises(UntrustedRecord) as impostor:  # a key the ring does not hold, under a known party's name
        verify(keyring, record(MessageSigner(keys["intruder"], "national")))
    assert impostor.value.kind == "unknown-signer"
    old = record(MessageSigner(keys["national"], "national"))
    with pytest.raises(UntrustedRecord) as stale:
        verify(keyring, old, now=time.time() + WEEK + 10)
    assert stale.value.kind == "stale"
    with pytest.raises(UntrustedRecord) as future:
        verify(keyring, old, now=time.time() - 3600)
    assert future.value.kind == "stale"
    doubled = record(MessageSigner(keys["national"], "national"))
    doubled.headers.append((HEADER_SIGNATURE, dict(doubled.headers)[HEADER_SIGNATURE]))
    with pytest.raises(UntrustedRecord, match="twice"):
        verify(keyring, doubled)


def test_a_rotated_key_still_verifies_while_it_is_kept_under_its_fingerprint(ring, tmp_path):
    keys, _, public = ring
    old_signer = MessageSigner(keys["cs-131016"], "cs-131016")
    before = record(old_signer)
    old_public = (public / "cs-131016.pub").read_bytes()
    generate_key_pair(tmp_path / "rotated", tmp_path / "rotated-pub", "cs-131016")
    (public / "cs-131016.pub").write_bytes((tmp_path / "rotated-pub" / "cs-131016.pub").read_bytes())
    with pytest.raises(UntrustedRecord):
        verify(PublicKeyRing(public), before)
    (public / f"cs-131016.{old_signer.key_id.rsplit(':', 1)[1]}.pub").write_bytes(old_public)
    assert verify(PublicKeyRing(public), before).party == "cs-131016"


def _change(municipality: str, *, origin: str | None = None, destination: str | None = None) -> dict:
    move = {"origin_municipality_code": origin, "destination_municipality_code": destination} if origin or destination else None
    return {"kind": "identity-change/v1", "municipality_code": municipality, "move": move}


ALLOWED = [
    # topology, signer, topic, kind, payload
    (WITH_TIER, "cs-131016", "jukinet.pref.13.identity", "identity-change", _change("131016")),
    (WITH_TIER, "cs-131016", "jukinet.pref.13.identity", "protection-marker/v1", {"municipality_code": "131016"}),
    (WITH_TIER, "cs-131130", "jukinet.pref.13.identity", "identity-change", _change("272035", destination="131130")),  # the 転出 a 転入 continues from
    (WITH_TIER, "cs-272035", "jukinet.pref.27.identity", "identity-change", _change("131016", destination="272035")),
    (WITH_TIER, "pref-13", topics.NATIONAL_IDENTITY, "identity-change", _change("131130")),
    (WITH_TIER, "pref-27", topics.NATIONAL_IDENTITY, "protection-marker/v1", {"municipality_code": "272035"}),
    (WITHOUT_TIER, "cs-272035", topics.NATIONAL_IDENTITY, "identity-change", _change("272035")),
    (WITH_TIER, "cs-131130", "jukinet.cs.272035.inbox", "move-out-certificate/v1", {"municipality_code": "131130"}),
    (WITH_TIER, "national", topics.PROVISIONS, "provision-record", {"provider": "national"}),
    (WITH_TIER, "cs-131016", topics.PROVISIONS, "provision-record", {"provider": "cs-131016"}),
    (WITH_TIER, "national", "jukinet.push.anything", "change-notification", {}),
    (WITH_TIER, "pref-13", topics.DEAD_LETTER, "", {}),
    (WITH_TIER, "provision-log", topics.DEAD_LETTER, "", {}),
]

REFUSED = [
    (WITH_TIER, "cs-131130", "jukinet.pref.13.identity", "identity-change", _change("131016")),  # the wrong CS
    (WITH_TIER, "cs-131130", "jukinet.pref.13.identity", "protection-marker/v1", {"municipality_code": "131016"}),
    (WITH_TIER, "cs-272035", "jukinet.pref.13.identity", "identity-change", _change("272035")),  # another prefecture's topic
    (WITH_TIER, "cs-131016", topics.NATIONAL_IDENTITY, "protection-marker/v1", {"municipality_code": "131016"}),  # past its prefecture server
    (WITH_TIER, "pref-27", topics.NATIONAL_IDENTITY, "identity-change", _change("131016")),  # another prefecture's person
    (WITH_TIER, "pref-13", topics.NATIONAL_IDENTITY, "identity-change", _change("272035", destination="131016")),  # made in another prefecture
    (WITH_TIER, "national", topics.NATIONAL_IDENTITY, "protection-marker/v1", {"municipality_code": "131016"}),
    (WITH_TIER, "pref-13", "jukinet.pref.13.identity", "identity-change", _change("131016")),
    (WITH_TIER, "cs-131016", "jukinet.pref.13.identity", "provision-record", {"municipality_code": "131016"}),  # a kind with no place there
    (WITHOUT_TIER, "pref-13", topics.NATIONAL_IDENTITY, "identity-change", _change("131016")),
    (WITH_TIER, "cs-131130", "jukinet.cs.272035.inbox", "move-out-certificate/v1", {"municipality_code": "131016"}),  # on behalf of another
    (WITH_TIER, "cs-272035", "jukinet.cs.272035.inbox", "move-in-notice/v1", {"municipality_code": "272035"}),
    (WITH_TIER, "national", "jukinet.cs.272035.inbox", "move-in-notice/v1", {"municipality_code": "131016"}),
    (WITH_TIER, "pref-13", topics.PROVISIONS, "provision-record", {"provider": "national"}),
    (WITH_TIER, "cs-131016", "jukinet.push.anything", "change-notification", {}),
    (WITH_TIER, "national", "jukinet.elsewhere", "", {}),
    (WITH_TIER, "agency-pension-service", topics.PROVISIONS, "provision-record", {"provider": "agency-pension-service"}),  # keys of the ring, no producers
    (WITH_TIER, "agency-pension-service", topics.DEAD_LETTER, "", {}),
    (WITH_TIER, "operator", topics.DEAD_LETTER, "", {}),
    (WITH_TIER, "rrs-131016", topics.PROVISIONS, "provision-record", {"provider": "rrs-131016"}),
    (WITH_TIER, "provision-log", topics.PROVISIONS, "provision-record", {"provider": "provision-log"}),
]


@pytest.mark.parametrize(("topology", "signer", "topic", "kind", "payload"), ALLOWED)
def test_each_node_may_produce_what_its_flows_send(topology, signer, topic, kind, payload):
    check_entitled(topology, signer=signer, topic=topic, kind=kind, payload=payload)


@pytest.mark.parametrize(("topology", "signer", "topic", "kind", "payload"), REFUSED)
def test_a_node_may_produce_nothing_else(topology, signer, topic, kind, payload):
    with pytest.raises(NotEntitled):
        check_entitled(topology, signer=signer, topic=topic, kind=kind, payload=payload)


def test_the_gate_checks_the_signature_then_the_entitlement(ring):
    keys, keyring, _ = ring
    gate = RecordGate(keyring, entitled=lambda *a: check_entitled(WITH_TIER, signer=a[0], topic=a[1], kind=a[2], payload=a[3]), max_age_seconds=WEEK)
    assert gate.admit(record(MessageSigner(keys["cs-131016"], "cs-131016"))).party == "cs-131016"
    with pytest.raises(UntrustedRecord) as refused:
        gate.admit(record(MessageSigner(keys["pref-13"], "pref-13")))
    assert refused.value.kind == "not-entitled"
    with pytest.raises(UntrustedRecord) as not_json:
        gate.admit(record(MessageSigner(keys["cs-131016"], "cs-131016"), value=b"\xff"))
    assert not_json.value.kind == "malformed"


def test_a_record_sent_again_is_told_from_the_original_at_the_same_offset(ring):
    """A relay sends again what an empty broker lost: the same key and value, a new message id. The lost-log check
    compares the record at an offset by its fingerprint, so the copy must not pass for the original."""
    from services.common.kafka import fingerprint

    keys, _, _ = ring
    signer = MessageSigner(keys["cs-131016"], "cs-131016")
    original, copy = record(signer), record(signer)
    assert (original.key, original.value) == (copy.key, copy.value)
    assert fingerprint(original) != fingerprint(copy)
    assert fingerprint(original) == fingerprint(SimpleNamespace(**vars(original)))
