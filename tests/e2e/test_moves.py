"""Moves between municipalities on the real network: 転出 at A, 特例転入 at B, 転入通知 back to A,
households moving together, 転出取消, 国外転出 and return, and the national server's
one-registration invariant while many moves run at once (issue: moves and online notifications)."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import httpx

from tests.conftest import wait_until
from contracts import topics
from tests.e2e.helpers import address_in, birth_body, has_prefecture_tier, prefecture_node, read_topic, register, trace_spans

CHIYODA, SHIBUYA, TOYONAKA = "131016", "131130", "272035"
def _today() -> str:
    """Today, asked when it is needed: a suite that runs across midnight must not date a move before a birth."""
    return date.today().isoformat()


def rrs(network, municipality: str) -> str:
    return network.url(f"municipal_rrs.{municipality}")


def move_out(network, origin: str, codes: list[str], destination: str | None = None, *, country: str | None = None, remaining_head: str | None = None) -> httpx.Response:
    body = {"resident_codes": codes, "planned_date": _today(), "notified_date": _today()}
    if destination is not None:
        body["destination"] = address_in(destination)
    else:
        body["destination_country"] = country
    if remaining_head:
        body["remaining_head"] = remaining_head
    return httpx.post(f"{rrs(network, origin)}/v1/move-outs", auth=network.staff_auth(), json=body, timeout=20)


def move_in(network, destination: str, persons: list[dict], *, household_id: str | None = None) -> httpx.Response:
    body = {"persons": persons, "new_address": address_in(destination), "move_date": _today(), "notified_date": _today()}
    if household_id:
        body["household_id"] = household_id
    return httpx.post(f"{rrs(network, destination)}/v1/move-ins", auth=network.staff_auth(), json=body, timeout=20)


def reservations(network, municipality: str) -> set[str]:
    return {c["resident_code"] for c in httpx.get(f"{rrs(network, municipality)}/v1/move-reservations", auth=network.staff_auth(), timeout=10).json()}


def national_row(db, code: str):
    rows = db("national").rows("select municipality_code, status, version, payload from identity where resident_code = %s", (code,))
    return rows[0] if rows else None


def record(network, municipality: str, code: str) -> dict:
    response = httpx.get(f"{rrs(network, municipality)}/v1/residents/{code}", auth=network.staff_auth(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_reserved(network, municipality: str, codes: list[str]) -> None:
    wait_until(lambda: set(codes) <= reservations(network, municipality), what=f"転入予約 of {codes} at {municipality}")


def all_sent(db, databases: list[str]) -> bool:
    return all(db(d).value("select count(*) from outbox where sent_at is null") == 0 for d in databases)


def upward_versions(network, topic: str, code: str) -> list[tuple[int, str]]:
    """(version, municipality) of every change of one person sent on an identity topic, in version order."""
    sent = [json.loads(r.value) for r in read_topic(network, topic) if r.key == code.encode()]
    return sorted((c["version"], c["municipality_code"]) for c in sent if c.get("kind") == "identity-change/v1")


def test_move_across_prefectures_keeps_the_codes_and_continues_the_versions(network, db):
    person = register(network, CHIYODA)
    code = person["resident_code"]
    wait_until(lambda: (national_row(db, code) or (None,))[0] == CHIYODA, what="registered at national")

    response = move_out(network, CHIYODA, [code], TOYONAKA)
    assert response.status_code == 201, response.text
    [moving] = response.json()
    assert moving["status"] == "moving_out" and moving["version"] == 2
    assert moving["pending_move"]["destination_municipality_code"] == TOYONAKA

    # in transit at the national server, with origin and destination
    row = wait_until(lambda: (r := national_row(db, code)) and r[1] == "moving_out" and r, what="in transit at national")
    move = json.loads(row[3])["move"]
    assert (row[0], move["origin_municipality_code"], move["destination_municipality_code"]) == (CHIYODA, CHIYODA, TOYONAKA)

    # the certificate reached Toyonaka without paper; the 転入 continues the sequence
    wait_reserved(network, TOYONAKA, [code])
    response = move_in(network, TOYONAKA, [{"resident_code": code}])
    assert response.status_code == 201, response.text
    [arrived] = response.json()
    assert (arrived["resident_code"], arrived["individual_number"], arrived["version"]) == (code, person["individual_number"], 3)
    assert arrived["status"] == "active" and arrived["relationship"] == "世帯主"
    assert arrived["family_register"] == person["family_register"], "本籍 and 筆頭者 came with the 転出証明書情報"
    assert arrived["previous_address"] == person["address"]["text"]

    # national: registered at Toyonaka; both prefectures' copies say so (the national one without that tier); Chiyoda closed its record
    wait_until(lambda: (r := national_row(db, code)) and r[:3] == (TOYONAKA, "active", 3), what="registered at Toyonaka nationally")
    pref_27, pref_13 = prefecture_node(network, "27").database, prefecture_node(network, "13").database
    wait_until(lambda: db(pref_27).value("select municipality_code from identity where resident_code = %s", (code,)) == TOYONAKA, what=f"{pref_27} copy")
    wait_until(lambda: db(pref_13).value("select municipality_code from identity where resident_code = %s", (code,)) == TOYONAKA, what=f"{pref_13} copy says where the person went")
    closed = wait_until(lambda: (r := record(network, CHIYODA, code))["status"] == "removed" and r, what="Chiyoda closes on the 転入通知")
    assert closed["pending_move"] is None and closed["version"] == 2

    # the Rückmeldung: Chiyoda answered, no discrepancy; Toyonaka's staff see it
    def reply():
        notices = httpx.get(f"{rrs(network, TOYONAKA)}/v1/notices", auth=network.staff_auth(), timeout=10).json()
        return [n for n in notices if n["resident_code"] == code and n["kind"] == "move-in-reply/v1"]
    [answered] = wait_until(reply, what="reply from Chiyoda")
    assert "no discrepancy" in answered["summary"]
    history = httpx.get(f"{rrs(network, TOYONAKA)}/v1/residents/{code}/history", auth=network.staff_auth(), timeout=10).json()
    assert [h["reason"] for h in history] == ["move_in"]
    assert [h[0] for h in db("national").rows("select version from identity_history where resident_code = %s order by version", (code,))] == [1, 2, 3]
    # each change went upward once per node that keeps it: to the national server from the prefecture (or CS) of the
    # municipality that made it; to each prefecture server the changes of its area, the 転出 and 転入 included
    every_version = [(1, CHIYODA), (2, CHIYODA), (3, TOYONAKA)]
    wait_until(lambda: all_sent(db, ["cs_131016", "cs_272035"]), what="the CSs' outboxes delivered")
    assert upward_versions(network, topics.NATIONAL_IDENTITY, code) == every_version
    if has_prefecture_tier(network):
        assert upward_versions(network, topics.prefecture_identity("13"), code) == every_version
        assert upward_versions(network, topics.prefecture_identity("27"), code) == every_version[1:]


def test_a_move_is_one_trace_from_the_destination_counter_to_the_origin_register_and_back(network, db):
    """The 転入 at B, the 転入通知 A's register applies, and the reply B's register takes: one trace an operator follows."""
    person = register(network, CHIYODA)
    code = person["resident_code"]
    assert move_out(network, CHIYODA, [code], SHIBUYA).status_code == 201
    wait_reserved(network, SHIBUYA, [code])
    assert move_in(network, SHIBUYA, [{"resident_code": code}]).status_code == 201
    trace_id = move_in_trace(db, SHIBUYA, code)

    def taken_in_move_trace(node_id: str, kind: str) -> list[dict]:
        return [s for s in trace_spans(network, node_id) if s["trace_id"] == trace_id and s["name"] == f"rrs take {kind}"]

    [closing] = wait_until(lambda: taken_in_move_trace(f"municipal_rrs.{CHIYODA}", "move-in-notice/v1"), what="A's register closing the record in the move's trace")
    [replied] = wait_until(lambda: taken_in_move_trace(f"municipal_rrs.{SHIBUYA}", "move-in-reply/v1"), what="B's register taking A's reply in the move's trace")
    assert closing["kind"] == replied["kind"] == "CONSUMER"
    assert closing["parent_id"] and replied["parent_id"], "each continues the span that carried the message to its CS"


def move_in_trace(db, municipality: str, code: str) -> str:
    """The trace id of a person's last 転入 at a register, as it stored it with the change for its CS."""
    return db(f"rrs_{municipality}").value(
        "select traceparent from outbox where key = %s and kind = 'identity-change' order by id desc limit 1", (code,)).split("-")[1]


def test_a_register_back_from_a_stop_closes_the_records_of_a_whole_pull_together(network, db):
    """転入通知 that queued at the origin's CS while its register was stopped come in one pull and close their records
    together: each record once, with its history entry; each destination answered in the trace of its own move."""
    codes = [register(network, CHIYODA)["resident_code"] for _ in range(3)]  # three households of one
    for code in codes:
        assert move_out(network, CHIYODA, [code], SHIBUYA).status_code == 201
    wait_reserved(network, SHIBUYA, codes)
    origin = f"municipal_rrs.{CHIYODA}"
    network.stop_node(origin)
    try:
        for code in codes:
            assert move_in(network, SHIBUYA, [{"resident_code": code}]).status_code == 201
        wait_until(lambda: db(f"cs_{CHIYODA}").value("select count(*) from notices where kind = 'move-in-notice/v1' and resident_code = any(%s)", (codes,)) == 3,
                   what="the three 転入通知 kept at Chiyoda's CS")
    finally:
        network.start_node(origin)

    for code in codes:
        closed = wait_until(lambda code=code: (r := record(network, CHIYODA, code))["status"] == "removed" and r, what=f"{code} closed at Chiyoda")
        assert closed["version"] == 2 and closed["pending_move"] is None
        reasons = db(f"rrs_{CHIYODA}").rows("select reason, explanation from resident_history where resident_code = %s order by sequence", (code,))
        assert [r[0] for r in reasons] == ["birth", "move_out", "move_out"] and reasons[-1][1].startswith("転出確定"), reasons
    traces = {move_in_trace(db, SHIBUYA, code) for code in codes}
    [together] = wait_until(lambda: [s for s in trace_spans(network, origin) if s["name"] == "rrs close 3 records"], what="one closing of the three records")
    assert {link["trace_id"] for link in together["links"]} == traces, "the closing is linked to the trace of each move"

    def replies_in_move_traces():
        taken = {s["trace_id"] for s in trace_spans(network, f"municipal_rrs.{SHIBUYA}") if s["name"] == "rrs take move-in-reply/v1"}
        return traces <= taken
    wait_until(replies_in_move_traces, what="Shibuya taking each reply in the trace of its move")
    replies = [n for n in httpx.get(f"{rrs(network, SHIBUYA)}/v1/notices", auth=network.staff_auth(), timeout=10).json() if n["resident_code"] in codes and n["kind"] == "move-in-reply/v1"]
    assert sorted(n["resident_code"] for n in replies) == sorted(codes) and all("no discrepancy" in n["summary"] for n in replies)


def test_a_household_moves_together_and_can_split_or_merge(network, db):
    head = register(network, CHIYODA)
    household = head["household_id"]
    spouse = register(network, CHIYODA, birth_body(CHIYODA, household_id=household))
    child = register(network, CHIYODA, birth_body(CHIYODA, household_id=household))
    codes = [head["resident_code"], spouse["resident_code"], child["resident_code"]]

    # the head cannot leave the others without a head
    response = move_out(network, CHIYODA, [codes[0]], SHIBUYA)
    assert response.status_code == 409 and "remaining_head" in response.json()["detail"]

    # the whole household, one procedure
    response = move_out(network, CHIYODA, codes, SHIBUYA)
    assert response.status_code == 201, response.text
    procedures = {r["pending_move"]["procedure_id"] for r in response.json()}
    assert len(procedures) == 1
    wait_reserved(network, SHIBUYA, codes)
    response = move_in(network, SHIBUYA, [{"resident_code": c} for c in codes])
    assert response.status_code == 201, response.text
    arrived = response.json()
    assert len({r["household_id"] for r in arrived}) == 1
    assert [r["relationship"] for r in arrived] == ["世帯主", "子", "子"]
    members = httpx.get(f"{rrs(network, SHIBUYA)}/v1/households/{arrived[0]['household_id']}", auth=network.staff_auth(), timeout=10).json()
    assert {m["resident_code"] for m in members} == set(codes)
    for code in codes:
        wait_until(lambda code=code: (r := national_row(db, code)) and r[:2] == (SHIBUYA, "active"), what=f"{code} at Shibuya")
        wait_until(lambda code=code: record(network, CHIYODA, code)["status"] == "removed", what=f"{code} closed at Chiyoda")

    # split: one child moves back to Chiyoda alone and joins an existing household there (merge)
    host = register(network, CHIYODA)
    response = move_out(network, SHIBUYA, [codes[2]], CHIYODA)
    assert response.status_code == 201, response.text
    wait_reserved(network, CHIYODA, [codes[2]])
    response = move_in(network, CHIYODA, [{"resident_code": codes[2], "relationship": "同居人"}], household_id=host["household_id"])
    assert response.status_code == 201, response.text
    [back] = response.json()
    assert back["household_id"] == host["household_id"] and back["relationship"] == "同居人" and back["version"] == 5
    still = httpx.get(f"{rrs(network, SHIBUYA)}/v1/households/{arrived[0]['household_id']}", auth=network.staff_auth(), timeout=10).json()
    assert {m["resident_code"] for m in still} == set(codes[:2])
    wait_until(lambda: (r := national_row(db, codes[2])) and r[:3] == (CHIYODA, "active", 5), what="back at Chiyoda nationally")
    # within one prefecture, each change of the child went upward once, from the CS of the municipality that made it
    wait_until(lambda: all_sent(db, ["cs_131016", "cs_131130"]), what="the CSs' outboxes delivered")
    upward = topics.prefecture_identity("13") if has_prefecture_tier(network) else topics.NATIONAL_IDENTITY
    assert upward_versions(network, upward, codes[2]) == [(1, CHIYODA), (2, CHIYODA), (3, SHIBUYA), (4, SHIBUYA), (5, CHIYODA)]


def test_a_cancelled_move_out_withdraws_the_certificate(network, db):
    code = register(network, SHIBUYA)["resident_code"]
    assert move_out(network, SHIBUYA, [code], TOYONAKA).status_code == 201
    wait_reserved(network, TOYONAKA, [code])
    response = httpx.post(f"{rrs(network, SHIBUYA)}/v1/residents/{code}/move-out/cancellation", auth=network.staff_auth(),
                          json={"cancellation_date": _today(), "explanation": "転居先の契約が取り消された"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active" and response.json()["version"] == 3
    wait_until(lambda: (r := national_row(db, code)) and r[:3] == (SHIBUYA, "active", 3), what="active again at Shibuya nationally")
    wait_until(lambda: code not in reservations(network, TOYONAKA), what="certificate withdrawn at Toyonaka")

    # the withdrawn certificate cannot be used: the filing is flagged, not registered
    response = move_in(network, TOYONAKA, [{"resident_code": code}])
    assert response.status_code == 409 and response.json()["type"].endswith("no-matching-move-out")
    # cancelling twice is refused
    again = httpx.post(f"{rrs(network, SHIBUYA)}/v1/residents/{code}/move-out/cancellation", auth=network.staff_auth(),
                       json={"cancellation_date": _today(), "explanation": "二重"}, timeout=10)
    assert again.status_code == 409


def test_a_move_in_without_a_matching_move_out_is_flagged_for_staff(network, db):
    code = register(network, CHIYODA)["resident_code"]
    wait_until(lambda: national_row(db, code) is not None, what="registered")
    response = move_in(network, TOYONAKA, [{"resident_code": code}])
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["resident_codes"] == [code]
    reviews = httpx.get(f"{rrs(network, TOYONAKA)}/v1/move-in-reviews", auth=network.staff_auth(), timeout=10).json()
    assert any(r["review_id"] == problem["review_id"] and r["resident_codes"] == [code] and r["state"] == "open" for r in reviews)
    assert db("rrs_272035").value("select count(*) from residents where resident_code = %s", (code,)) == 0
    assert national_row(db, code)[:2] == (CHIYODA, "active")


def test_moving_abroad_and_back_keeps_the_resident_code(network, db):
    person = register(network, TOYONAKA)
    code = person["resident_code"]
    response = move_out(network, TOYONAKA, [code], country="アメリカ合衆国")
    assert response.status_code == 201, response.text
    assert response.json()[0]["status"] == "removed"
    row = wait_until(lambda: (r := national_row(db, code)) and r[1] == "removed" and r, what="emigrated nationally")
    assert json.loads(row[3])["move"]["destination_country"] == "アメリカ合衆国"

    response = httpx.post(f"{rrs(network, SHIBUYA)}/v1/move-ins/from-abroad", auth=network.staff_auth(), json={
        "resident_code": code, "new_address": address_in(SHIBUYA), "move_date": _today(), "notified_date": _today(),
    }, timeout=20)
    assert response.status_code == 201, response.text
    back = response.json()
    assert (back["individual_number"], back["version"], back["status"]) == (person["individual_number"], 3, "active")
    wait_until(lambda: (r := national_row(db, code)) and r[:3] == (SHIBUYA, "active", 3), what="registered again at Shibuya")

    # a person who never left abroad cannot be 'returned'
    stayer = register(network, CHIYODA)["resident_code"]
    wait_until(lambda: national_row(db, stayer) is not None, what="registered")
    response = httpx.post(f"{rrs(network, SHIBUYA)}/v1/move-ins/from-abroad", auth=network.staff_auth(), json={
        "resident_code": stayer, "new_address": address_in(SHIBUYA), "move_date": _today(),
    }, timeout=20)
    assert response.status_code == 409


def _invariant_violations(db, codes: list[str]) -> list[str]:
    """Each person is registered in exactly one municipality, or in transit with a known origin and destination."""
    found = []
    rows = db("national").rows("select resident_code, municipality_code, status, payload from identity where resident_code = any(%s)", (codes,))
    if len(rows) != len(codes):
        found.append(f"{len(codes) - len(rows)} persons missing")
    for code, municipality, status, payload in rows:
        move = json.loads(payload).get("move")
        if status == "active":
            continue
        if status == "moving_out" and move and move["origin_municipality_code"] == municipality and move["destination_municipality_code"] not in (None, municipality):
            continue
        found.append(f"{code}: {status} at {municipality} with move {move}")
    return found


def test_concurrent_moves_keep_exactly_one_registration(network, db):
    rng = random.Random(7)
    places = [CHIYODA, SHIBUYA, TOYONAKA]
    people = {}
    for i in range(18):
        home = places[i % 3]
        people[register(network, home)["resident_code"]] = home
    codes = list(people)
    wait_until(lambda: db("national").value("select count(*) from identity where resident_code = any(%s)", (codes,)) == len(codes), what="all registered")

    violations: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            violations.extend(_invariant_violations(db, codes))

    watcher = threading.Thread(target=watch)
    watcher.start()

    def journey(code: str) -> tuple[str, str, int]:
        """Two moves in a row, each 転出 → 特例転入, as fast as the network lets them."""
        here, version = people[code], 1
        for _ in range(2):
            there = rng.choice([p for p in places if p != here])
            response = move_out(network, here, [code], there)
            assert response.status_code == 201, response.text
            wait_reserved(network, there, [code])
            response = move_in(network, there, [{"resident_code": code}])
            assert response.status_code == 201, response.text
            here, version = there, response.json()[0]["version"]
        return code, here, version

    try:
        with ThreadPoolExecutor(max_workers=9) as pool:
            outcomes = list(pool.map(journey, codes))
        for code, where, version in outcomes:
            wait_until(lambda code=code, where=where, version=version: (r := national_row(db, code)) and r[:3] == (where, "active", version), what=f"{code} settled at {where}")
    finally:
        stop.set()
        watcher.join()
    assert not violations, violations[:5]
    for code, where, _ in outcomes:
        # active in exactly one register: the destination; every earlier register closed its record
        active = [m for m in places if db(f"rrs_{m}").value("select status from residents where resident_code = %s", (code,)) == "active"]
        assert active == [where]
        wait_until(lambda code=code, where=where: all(db(f"rrs_{m}").value("select status from residents where resident_code = %s", (code,)) in (None, "removed")
                                                      for m in places if m != where), what=f"{code} closed everywhere else")


def _notices_as_register(network, municipality: str, *, after: int, wait: float) -> httpx.Response:
    """What the register's own long poll asks its CS (signed with the register's key)."""
    from services.common.tokens import load_private_key, sign_token

    token = sign_token(load_private_key(network.private_keys / f"rrs-{municipality}.key"), issuer=f"rrs-{municipality}", audience=f"cs-{municipality}")
    return httpx.get(f"{network.url(f'cs_gateway.{municipality}')}/v1/rrs/notices", params={"after": after, "limit": 500, "wait": wait},
                     headers={"authorization": f"Bearer {token}"}, timeout=wait + 10)


def test_the_cs_hands_a_notice_to_a_waiting_register_as_soon_as_it_is_stored(network):
    last = 0
    while batch := _notices_as_register(network, CHIYODA, after=last, wait=0).json()["notices"]:
        last = batch[-1]["sequence"]

    started = time.monotonic()
    assert _notices_as_register(network, CHIYODA, after=last, wait=1.5).json()["notices"] == []
    assert time.monotonic() - started >= 1.5  # nothing arrived: the CS held the request for the time asked

    waiting = ThreadPoolExecutor(max_workers=1).submit(_notices_as_register, network, CHIYODA, after=last, wait=60)
    person = register(network, SHIBUYA)
    assert move_out(network, SHIBUYA, [person["resident_code"]], CHIYODA).status_code == 201
    answer = waiting.result(timeout=70)
    handed = [n["message"] for n in answer.json()["notices"]]
    # the 転出証明書情報 came in the answer to a request made before it existed, not after the 60 s
    assert any(m["kind"] == "move-out-certificate/v1" and m["resident_code"] == person["resident_code"] for m in handed), handed
