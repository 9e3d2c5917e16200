"""Push-type provision: follows, held notifications, corrections and retractions,
the Kafka topic and the REST feed, each delivery a provision (issue 4); what is on
an agency's topic only that agency can read (issue 17)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from contracts import topics
from contracts.push import ChangeNotification
from contracts.push_encryption import NotificationUnreadable, decrypt_notification
from tests.conftest import wait_until
from tests.e2e.helpers import address_in, agency_call, query, read_topic, register, trace_spans


def _national_has(db, code, version=1):
    wait_until(lambda: (db("national").value("select version from identity where resident_code = %s", (code,)) or 0) >= version, what=f"{code} v{version} at national")


def _feed(network, agency, **params):
    response = agency_call(network, agency, "GET", "/v1/notifications", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return response.json()


def _mine(feed, subject):
    return [n for n in feed["notifications"] if n["subject"] == subject]


def _encryption_key(network, agency):
    """The agency's X25519 private key, as an agency loads it (docs/push.md, "Reading the topic")."""
    return serialization.load_pem_private_key((network.private_keys / f"agency-{agency}.x25519.key").read_bytes(), password=None)


def _records(network, agency, follow_id):
    """The raw records of one follow on the agency's topic (any consumer of the broker can read them)."""
    return [r for r in read_topic(network, topics.agency_push(agency)) if r.key == str(follow_id).encode()]


def _on_topic(network, agency, follow_id):
    """The notifications of one follow on the agency's topic, opened with the agency's key."""
    key = _encryption_key(network, agency)
    return [decrypt_notification(key, r, agency=agency) for r in _records(network, agency, follow_id)]


def _move(network, municipality, code):
    new_address = address_in(municipality)
    r = httpx.post(f"{network.url(f'municipal_rrs.{municipality}')}/v1/residents/{code}/move-within", auth=network.staff_auth(), json={"new_address": new_address, "move_date": date.today().isoformat()})
    assert r.status_code == 200, r.text
    return new_address


def _follow(network, agency, affair, **subject):
    r = agency_call(network, agency, "POST", "/v1/follows", json={"affair": affair, **subject})
    assert r.status_code == 201, r.text
    return r.json()


def test_follow_for_an_unauthorised_affair_is_refused_and_recorded(network, db):
    person = register(network, "131016")
    _national_has(db, person["resident_code"])
    before = db("national").value("select count(*) from refusals where reason = 'affair-not-authorised'")
    refused = agency_call(network, "pension-service", "POST", "/v1/follows", json={"affair": "passport-issuance", "resident_code": person["resident_code"]})
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
    assert db("national").value("select count(*) from refusals where reason = 'affair-not-authorised'") == before + 1
    assert db("national").value("select count(*) from follows where resident_code = %s", (person["resident_code"],)) == 0
    # a pseudonymous affair cannot be followed by resident code
    by_code = agency_call(network, "mofa-passport", "POST", "/v1/follows", json={"affair": "passport-issuance", "resident_code": person["resident_code"]})
    assert by_code.status_code == 403 and by_code.json()["type"].endswith("/resident-code-not-authorised")


def test_a_change_reaches_the_agency_topic_and_feed_and_is_recorded(network, db):
    person = register(network, "131130")
    code = person["resident_code"]
    _national_has(db, code)
    follow = _follow(network, "pension-service", "national-pension", resident_code=code)
    assert follow["subject"] == code
    again = agency_call(network, "pension-service", "POST", "/v1/follows", json={"affair": "national-pension", "resident_code": code})
    assert again.status_code == 200 and again.json()["follow_id"] == follow["follow_id"]

    new_address = _move(network, "131130", code)
    notes = wait_until(lambda: _mine(_feed(network, "pension-service"), code), what="the move in the feed")
    assert [n["type"] for n in notes] == ["move"]
    assert notes[0]["person"]["address"]["text"] == new_address["text"] and notes[0]["affair"] == "national-pension"
    on_topic = wait_until(lambda: _on_topic(network, "pension-service", follow["follow_id"]), what="the move on the agency's topic")
    assert [ChangeNotification.model_validate(n) for n in on_topic] == [ChangeNotification.model_validate(notes[0])], "the topic holds what the feed holds"
    # each delivered notification is a provision
    wait_until(lambda: db("provlog").value("select count(*) from provision_records where payload::jsonb ->> 'notification_id' = %s", (notes[0]["notification_id"],)) == 1, what="the provision record of the notification")

    # the feed cursor and replay from a point in time
    cursor = notes[0]["sequence"]
    assert _mine(_feed(network, "pension-service", after=cursor), code) == []
    assert _mine(_feed(network, "pension-service", since=datetime(2000, 1, 1, tzinfo=UTC).isoformat()), code)
    assert _mine(_feed(network, "pension-service", since=datetime.now(UTC).isoformat()), code) == []

    # stop following: later changes are not sent
    assert agency_call(network, "pension-service", "DELETE", f"/v1/follows/{follow['follow_id']}").status_code == 204
    _move(network, "131130", code)
    _national_has(db, code, 3)
    assert db("national").value("select count(*) from notifications where follow_id = %s", (follow["follow_id"],)) == 1
    # another agency sees none of this
    assert _mine(_feed(network, "mofa-passport"), code) == []


def _in_the_clear(record, *texts):
    """Which of the texts are in the record's raw bytes (key, value, headers), as UTF-8 or as JSON's \\u escapes."""
    raw = b"\0".join([record.key or b"", record.value, *(value for _, value in record.headers)])
    return [t for t in texts if t.encode() in raw or json.dumps(t).encode()[1:-1] in raw]


def test_only_the_agency_can_read_what_is_on_its_topic(network, db):
    """Any consumer of the broker can read any topic; what is on an agency's topic is sealed to that agency's key (HPKE):
    another agency's key opens nothing, and the person's data is nowhere in the records' bytes. The agency opens its
    records with contracts/push_encryption.py; the REST feed still answers it in plain JSON."""
    person = register(network, "131130")
    code = person["resident_code"]
    _national_has(db, code)
    follow = _follow(network, "pension-service", "national-pension", resident_code=code)  # no hold window
    new_address = _move(network, "131130", code)
    feed = wait_until(lambda: _mine(_feed(network, "pension-service"), code), what="the move in the feed")
    assert feed[0]["person"]["address"]["text"] == new_address["text"], "the feed answers in the clear"
    records = wait_until(lambda: _records(network, "pension-service", follow["follow_id"]), what="the move on the agency's topic")
    assert len(records) == 1
    record = records[0]

    # another agency, consuming the same topic, reads nothing: its key does not open the record
    with pytest.raises(NotificationUnreadable):
        decrypt_notification(_encryption_key(network, "mofa-passport"), record, agency="mofa-passport")
    with pytest.raises(NotificationUnreadable):
        decrypt_notification(_encryption_key(network, "mofa-passport"), record, agency="pension-service")
    name = person["name"]
    assert _in_the_clear(record, code, *filter(None, (name["family_name"], name["given_name"])), new_address["text"], person["birth_date"], "national-pension") == []
    envelope = json.loads(record.value)
    assert envelope["kind"] == "encrypted-notification/v1" and set(envelope) == {
        "kind", "kem_id", "kdf_id", "aead_id", "key_id", "notification_id", "sequence", "enc", "ciphertext"}

    # the agency opens it with its own key, and reads what the feed holds
    opened = decrypt_notification(_encryption_key(network, "pension-service"), record, agency="pension-service")
    assert ChangeNotification.model_validate(opened) == ChangeNotification.model_validate(feed[0])
    assert opened["subject"] == code and opened["person"]["address"]["text"] == new_address["text"]
    # moved under another record key, it opens for nobody
    moved = dataclasses.replace(record, key=b"00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotificationUnreadable):
        decrypt_notification(_encryption_key(network, "pension-service"), moved, agency="pension-service")


def test_a_correction_inside_the_hold_window_replaces_the_notification(network, db):
    person = register(network, "131016")
    code = person["resident_code"]
    _national_has(db, code)
    follow = _follow(network, "pension-service", "pension-benefits", resident_code=code)  # hold window: 4 s in the sample topology
    wrong = _move(network, "131016", code)
    right = {**wrong, "text": wrong["text"] + "番地訂正"}
    corrected = httpx.post(f"{network.url('municipal_rrs.131016')}/v1/residents/{code}/corrections", auth=network.staff_auth(), json={
        "address": right, "correction_date": date.today().isoformat(), "explanation": "転居先の番地の入力誤りを訂正",
    })
    assert corrected.status_code == 200, corrected.text
    _national_has(db, code, 3)
    assert db("national").value("select count(*) from notifications where resident_code = %s and status = 'delivered'", (code,)) == 0, "nothing left before the hold window ended"
    notes = wait_until(lambda: _mine(_feed(network, "pension-service"), code), timeout=30, what="the corrected notification")
    assert len(notes) == 1 and notes[0]["type"] == "move" and notes[0]["version"] == 3 and notes[0]["corrects"] is None
    assert notes[0]["person"]["address"]["text"] == right["text"]
    assert db("national").value("select status from notifications where resident_code = %s and version = 2", (code,)) == "superseded"
    on_topic = wait_until(lambda: _on_topic(network, "pension-service", follow["follow_id"]), what="the corrected notification on the topic")
    assert len(on_topic) == 1 and on_topic[0]["person"]["address"]["text"] == right["text"], "the erroneous address never reached the agency"
    assert db("provlog").value("select count(*) from provision_records where resident_code = %s and payload::jsonb ->> 'query_type' = 'Notification'", (code,)) in (0, 1)


def test_a_correction_after_delivery_follows_the_notification_it_fixes(network, db):
    person = register(network, "272035")
    code = person["resident_code"]
    _national_has(db, code)
    _follow(network, "pension-service", "pension-benefits", resident_code=code)
    _move(network, "272035", code)
    delivered = wait_until(lambda: _mine(_feed(network, "pension-service"), code), timeout=30, what="the move delivered")
    fixed = httpx.post(f"{network.url('municipal_rrs.272035')}/v1/residents/{code}/corrections", auth=network.staff_auth(), json={
        "name": {**person["name"], "given_name": "訂正"}, "correction_date": date.today().isoformat(), "explanation": "氏名の誤記",
    })
    assert fixed.status_code == 200, fixed.text
    both = wait_until(lambda: (lambda n: n if len(n) == 2 else None)(_mine(_feed(network, "pension-service"), code)), timeout=30, what="the correction after the move")
    assert [n["type"] for n in both] == ["move", "correction"]
    assert both[1]["corrects"] == delivered[0]["notification_id"] and both[1]["person"]["name"]["given_name"] == "訂正"


def test_a_retraction_references_the_erroneous_death(network, db):
    person = register(network, "131130")
    code = person["resident_code"]
    _national_has(db, code)
    _follow(network, "pension-service", "national-pension", resident_code=code)  # no hold window
    rrs = network.url("municipal_rrs.131130")
    assert httpx.post(f"{rrs}/v1/residents/{code}/death", auth=network.staff_auth(), json={"death_date": date.today().isoformat()}).status_code == 200
    death = wait_until(lambda: _mine(_feed(network, "pension-service"), code), what="the death notification")
    restored = httpx.post(f"{rrs}/v1/residents/{code}/restoration", auth=network.staff_auth("supervisor"), json={"restoration_date": date.today().isoformat(), "explanation": "別人の死亡届を誤って処理"})
    assert restored.status_code == 200 and restored.json()["status"] == "active"
    both = wait_until(lambda: (lambda n: n if len(n) == 2 else None)(_mine(_feed(network, "pension-service"), code)), what="the retraction")
    assert [n["type"] for n in both] == ["death", "retraction"] and both[1]["corrects"] == death[0]["notification_id"]
    assert both[1]["person"]["status"] == "active"


def test_pseudonymous_agencies_share_no_identifier(network, db):
    people = [register(network, m) for m in ("131016", "131130", "272035")]
    codes = [p["resident_code"] for p in people]
    for code in codes:
        _national_has(db, code)

    def dataset(agency, affair):
        persons = []
        for p in people:
            r = query(network, agency, {"type": "ByBasicItems", "affair": affair, "family_name": p["name"]["family_name"], "given_name": p["name"]["given_name"], "birth_date": p["birth_date"]})
            assert r.status_code == 200, r.text
            persons += r.json()["persons"]
        return persons

    passport, employment = dataset("mofa-passport", "passport-issuance"), dataset("mhlw-employment", "employment-insurance")
    pension = dataset("pension-service", "pension-benefits")
    assert all(p["resident_code"] is None and p["individual_number"] is None and p["pseudonym"] for p in passport + employment)

    def identifiers(persons):
        return {v for p in persons for v in (p.get("resident_code"), p.get("pseudonym"), p.get("individual_number")) if v}

    assert identifiers(passport) and identifiers(employment)
    assert not identifiers(passport) & identifiers(employment)
    assert not identifiers(passport) & identifiers(pension) and not identifiers(employment) & identifiers(pension)

    # a pseudonym is stable for its agency and useless to any other
    mine = {p["name"]["family_name"] + (p["name"]["given_name"] or ""): p["pseudonym"] for p in passport}
    first = people[0]
    pseudonym = mine[first["name"]["family_name"] + first["name"]["given_name"]]
    again = query(network, "mofa-passport", {"type": "ByPseudonym", "affair": "passport-issuance", "pseudonym": pseudonym})
    assert again.status_code == 200 and [p["pseudonym"] for p in again.json()["persons"]] == [pseudonym]
    stolen = query(network, "mhlw-employment", {"type": "ByPseudonym", "affair": "employment-insurance", "pseudonym": pseudonym})
    assert stolen.status_code == 200 and stolen.json()["persons"] == []

    # follows and notifications work with pseudonyms too
    follow = _follow(network, "mofa-passport", "passport-issuance", pseudonym=pseudonym)
    assert follow["subject"] == pseudonym
    _move(network, first["address"]["municipality_code"], first["resident_code"])
    notes = wait_until(lambda: _mine(_feed(network, "mofa-passport"), pseudonym), what="a pseudonymous notification")
    assert notes[0]["person"]["pseudonym"] == pseudonym and notes[0]["person"]["resident_code"] is None
    assert first["resident_code"] not in json.dumps(notes)
    # on the topic, not even the pseudonym is in the clear; the agency opens the record
    records = wait_until(lambda: _records(network, "mofa-passport", follow["follow_id"]), what="the notification on the agency's topic")
    assert _in_the_clear(records[0], pseudonym, first["resident_code"], first["name"]["family_name"]) == []
    assert decrypt_notification(_encryption_key(network, "mofa-passport"), records[0], agency="mofa-passport")["subject"] == pseudonym
    assert agency_call(network, "mhlw-employment", "POST", "/v1/follows", json={"affair": "employment-insurance", "pseudonym": pseudonym}).status_code == 404


def test_changes_the_national_server_takes_in_one_fetch_notify_in_their_order(network, db):
    """Changes that queued while the national server was stopped come in one fetch: their notifications are planned
    together (one read of the follows for the whole fetch) and still follow each person's versions in order."""
    first, second = (register(network, "131130")["resident_code"] for _ in range(2))
    for code in (first, second):
        _national_has(db, code)
        _follow(network, "pension-service", "national-pension", resident_code=code)  # no hold window
    national = "national_server.national"
    network.stop_node(national)
    try:
        _move(network, "131130", first)
        _move(network, "131130", second)
        _move(network, "131130", first)
    finally:
        network.start_node(national)
    _national_has(db, first, version=3)
    notes = wait_until(lambda: len(n := _mine(_feed(network, "pension-service"), first)) == 2 and n, what="both moves of the first person in the feed")
    assert [(n["type"], n["version"]) for n in notes] == [("move", 2), ("move", 3)]
    assert notes[0]["sequence"] < notes[1]["sequence"]
    assert [n["version"] for n in wait_until(lambda: _mine(_feed(network, "pension-service"), second), what="the second person's move")] == [2]
    batches = [s for s in trace_spans(network, national) if s["name"].startswith(f"consume {topics.NATIONAL_IDENTITY} batch of")]
    assert batches, "the queued changes were taken together"
    # each change applied in the trace it was sent in: the national row keeps the trace of the counter's change
    sent = db("rrs_131130").value("select traceparent from outbox where key = %s and kind = 'identity-change' order by id desc limit 1", (first,))
    kept = db("national").value("select traceparent from identity where resident_code = %s", (first,))
    assert kept.split("-")[1] == sent.split("-")[1]
