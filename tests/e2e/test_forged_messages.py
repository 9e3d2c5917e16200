"""An attacker who reaches the broker: forged, replayed, misattributed and altered records change nothing.

Every record is signed by the node that produced it and checked by its
consumer for the signature and the signer's entitlement
(services/common/message_signing.py, services/common/entitlement.py). Each
refused record goes to the dead letters with its reason and moves the
``jukinet_refusals_total{channel="kafka", reason="untrusted-…"}`` counter an
operator alert watches.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import httpx

from contracts import topics
from contracts.topics import HEADER_SIGNER
from services.common.tokens import generate_key_pair
from tests.conftest import TenantDb, wait_until
from tests.e2e.helpers import address_in, produce, read_topic, register, upstream_party
from tests.e2e.test_ops import scrape, value

NATIONAL = "national_server.national"


def national(network) -> TenantDb:
    return TenantDb(network, "national")


def dead_letter_after(network, before: int, *, containing: str) -> str:
    """The reason of a dead letter at the national server after id ``before`` that contains ``containing``."""

    def found():
        reasons = [r[0] for r in national(network).rows("select reason from dead_letters where id > %s order by id", (before,))]
        return next((r for r in reasons if containing in r), None)

    return wait_until(found, timeout=30, what=f"a dead letter at the national server saying {containing!r}")


def last_dead_letter(network) -> int:
    return national(network).value("select coalesce(max(id), 0) from dead_letters")


def marker(code: str, *, protected: bool, as_of: datetime) -> bytes:
    return json.dumps({"kind": "protection-marker/v1", "resident_code": code, "municipality_code": "131016", "protected": protected,
                       "valid_until": None, "as_of": as_of.isoformat()}).encode()


def test_a_forged_marker_cannot_lift_a_protection(network, tmp_path):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: national(network).value("select version from identity where resident_code = %s", (code,)) == 1, what="the birth at national")
    upstream = upstream_party(network, "131016")
    produce(network, topics.NATIONAL_IDENTITY, key=code, value=marker(code, protected=True, as_of=datetime.now(UTC)), signed_as=upstream, kind="protection-marker/v1")
    wait_until(lambda: national(network).value("select protected from protection_markers where resident_code = %s", (code,)) is True, what="the protection at national")
    before, metrics_before = last_dead_letter(network), scrape(network, NATIONAL)
    lift = marker(code, protected=False, as_of=datetime.now(UTC) + timedelta(seconds=1))

    produce(network, topics.NATIONAL_IDENTITY, key=code, value=lift, kind="protection-marker/v1")  # unsigned, as in the attack found
    dead_letter_after(network, before, containing="unsigned record")
    generate_key_pair(tmp_path / "private", tmp_path / "public", "intruder")  # a key of its own, under a node's name
    produce(network, topics.NATIONAL_IDENTITY, key=code, value=lift, kind="protection-marker/v1", signed_as=upstream, key_file=tmp_path / "private" / "intruder.key")
    dead_letter_after(network, before, containing="no key of the network")
    wrong_node = "pref-27" if upstream.startswith("pref-") else "cs-131130"  # a real node, not the person's
    produce(network, topics.NATIONAL_IDENTITY, key=code, value=lift, signed_as=wrong_node, kind="protection-marker/v1")
    dead_letter_after(network, before, containing=f"{wrong_node} may not")
    produce(network, topics.NATIONAL_IDENTITY, key=code, value=lift, signed_as="national", kind="protection-marker/v1")
    dead_letter_after(network, before, containing="national may not")

    assert national(network).value("select protected from protection_markers where resident_code = %s", (code,)) is True
    after = wait_until(lambda: (s := scrape(network, NATIONAL)) and value(s, "jukinet_refusals_total", channel="kafka") >= value(metrics_before, "jukinet_refusals_total", channel="kafka") + 4 and s,
                       what="the untrusted-record counters to move")
    for reason in ("untrusted-unsigned", "untrusted-unknown-signer", "untrusted-not-entitled"):
        assert value(after, "jukinet_refusals_total", channel="kafka", reason=reason) > value(metrics_before, "jukinet_refusals_total", channel="kafka", reason=reason), reason


def test_a_forged_change_is_refused_and_the_real_one_is_applied(network):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: national(network).value("select version from identity where resident_code = %s", (code,)) == 1, what="the birth at national")
    held = json.loads(national(network).value("select payload from identity_history where resident_code = %s and version = 1", (code,)))
    forged = held | {"event_id": "6f1c1f7e-0000-4000-8000-000000000001", "version": 2, "reason": "move_within",
                     "identity": held["identity"] | {"address": held["identity"]["address"] | {"text": "東京都千代田区永田町1-7-1 偽"}}}
    before = last_dead_letter(network)
    produce(network, topics.NATIONAL_IDENTITY, key=code, value=json.dumps(forged).encode(), kind="identity-change")
    dead_letter_after(network, before, containing="unsigned record")

    moved = httpx.post(f"{network.url('municipal_rrs.131016')}/v1/residents/{code}/move-within", auth=network.staff_auth(),
                       json={"new_address": address_in("131016"), "move_date": date.today().isoformat()}, timeout=10)
    assert moved.status_code == 200, moved.text
    wait_until(lambda: national(network).value("select version from identity where resident_code = %s", (code,)) == 2, what="the real version 2 at national")
    assert "偽" not in national(network).value("select payload from identity where resident_code = %s", (code,))
    assert not national(network).rows("select reason from dead_letters where id > %s and reason like %s", (before, "%already held%"))


def _a_real_record_of(network, code: str):
    def find():
        return next((r for r in read_topic(network, topics.NATIONAL_IDENTITY, idle_ms=500) if r.key == code.encode()), None)

    return wait_until(find, what=f"the record of {code} on the national topic")


def test_a_replayed_or_altered_record_changes_nothing(network):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: national(network).value("select version from identity where resident_code = %s", (code,)) == 1, what="the birth at national")
    original = _a_real_record_of(network, code)
    assert dict(original.headers)[HEADER_SIGNER].decode().startswith(upstream_party(network, "131016") + ":")
    history = national(network).value("select count(*) from identity_history where resident_code = %s", (code,))
    before = last_dead_letter(network)

    produce(network, topics.NATIONAL_IDENTITY, key=code, value=original.value, headers=list(original.headers))  # the same record, byte for byte
    dead_letter_after(network, before, containing="a replay")
    altered = original.value.replace(b'"version":1', b'"version":2', 1)
    assert altered != original.value
    produce(network, topics.NATIONAL_IDENTITY, key=code, value=altered, headers=list(original.headers))  # one byte changed
    dead_letter_after(network, before, containing="does not match the record")
    assert national(network).value("select count(*) from identity_history where resident_code = %s", (code,)) == history


def test_a_change_signed_by_another_cs_is_refused(network):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: national(network).value("select version from identity where resident_code = %s", (code,)) == 1, what="the birth at national")
    held = json.loads(national(network).value("select payload from identity_history where resident_code = %s and version = 1", (code,)))
    change = held | {"event_id": "6f1c1f7e-0000-4000-8000-000000000002", "version": 2, "reason": "correction"}
    tier = upstream_party(network, "131016").startswith("pref-")
    topic = topics.prefecture_identity("13") if tier else topics.NATIONAL_IDENTITY
    receiver = TenantDb(network, "pref_13") if tier else national(network)
    before = receiver.value("select coalesce(max(id), 0) from dead_letters")
    produce(network, topic, key=code, value=json.dumps(change).encode(), signed_as="cs-131130", kind="identity-change")  # 渋谷区 about 千代田区's resident
    wait_until(lambda: receiver.value("select count(*) from dead_letters where id > %s and reason like %s", (before, "%cs-131130 may not send a change of municipality 131016%")),
               what="the misattributed change dead-lettered")
    assert national(network).value("select version from identity where resident_code = %s", (code,)) == 1
    assert receiver.value("select version from identity where resident_code = %s", (code,)) == 1
