"""Crashes and lost messages: every tier ends up with the municipality's truth,
nothing lost, nothing applied twice."""

from __future__ import annotations

import random
import threading
from datetime import date

import httpx

from tests.conftest import wait_until
from tests.e2e.helpers import address_in, below_national, copies_of, national_forgets_versions_after_first, prefecture_node, redeliver_to_national, register

MUNICIPALITIES = ("131016", "131130", "272035")


def _stream_changes(network, stop: threading.Event, touched: dict[str, str], errors: list[str]) -> None:
    """Births and moves within each municipality, as fast as the counters go."""
    rng = random.Random(7)
    while not stop.is_set():
        municipality = rng.choice(MUNICIPALITIES)
        try:
            mine = [code for code, m in touched.items() if m == municipality]
            if mine and rng.random() < 0.5:
                code = rng.choice(mine)
                r = httpx.post(f"{network.url(f'municipal_rrs.{municipality}')}/v1/residents/{code}/move-within", auth=network.staff_auth(),
                               json={"new_address": address_in(municipality, rng), "move_date": date.today().isoformat()}, timeout=10)
                if r.status_code != 200 and r.status_code != 409:
                    errors.append(r.text)
            else:
                touched[register(network, municipality)["resident_code"]] = municipality
        except Exception as exc:  # the RRS itself is never killed here; record anything odd
            errors.append(repr(exc))


def _versions(db, database: str, codes: list[str]) -> dict[str, int]:
    table = "residents" if database.startswith("rrs_") else "identity"
    rows = db(database).rows(f"select resident_code, version from {table} where resident_code = any(%s)", (codes,))
    return dict(rows)


def test_killing_consumers_mid_stream_loses_nothing_and_applies_nothing_twice(network, db):
    touched: dict[str, str] = {}
    errors: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(target=_stream_changes, args=(network, stop, touched, errors), daemon=True)
    writer.start()
    try:
        wait_until(lambda: len(touched) >= 10, what="a stream of changes")
        for victim in dict.fromkeys((prefecture_node(network, "13").id, "national_server.national", "provision_log.provision_log")):
            network.stop_node(victim, kill=True)  # SIGKILL: no clean shutdown
            wait_until(lambda n=len(touched): len(touched) >= n + 5, what="changes while a consumer is down")
            network.start_node(victim)
        network.stop_node("cs_gateway.131130", kill=True)
        wait_until(lambda n=len(touched): len(touched) >= n + 5, what="changes while a CS is down")
        network.start_node("cs_gateway.131130")
        wait_until(lambda n=len(touched): len(touched) >= n + 5, what="changes after the restarts")
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not errors, errors[:3]

    codes = list(touched)
    truth: dict[str, int] = {}
    for municipality in MUNICIPALITIES:
        truth.update(_versions(db, f"rrs_{municipality}", [c for c in codes if touched[c] == municipality]))
    assert len(truth) == len(codes)

    def converged(database: str, subset: list[str]) -> bool:
        return _versions(db, database, subset) == {c: truth[c] for c in subset}

    for municipality in MUNICIPALITIES:
        subset = [c for c in codes if touched[c] == municipality]
        for database in copies_of(network, municipality):
            wait_until(lambda: converged(database, subset), timeout=60, what=f"{database} converged for {municipality}")
    wait_until(lambda: converged("national", codes), timeout=60, what="national converged")

    # nothing applied twice: every tier above the CS holds exactly versions 1..n of each person, once each
    for database in {"national"} | {prefecture_node(network, p.code).database for p in network.topology.prefectures}:
        rows = db(database).rows("select resident_code, count(*), max(version), count(distinct event_id) from identity_history where resident_code = any(%s) group by resident_code", (codes,))
        for code, count, highest, events in rows:
            assert count == highest == events == truth[code], (database, code)
    # and each tier's current identity equals what the municipality holds
    for municipality in MUNICIPALITIES:
        subset = [c for c in codes if touched[c] == municipality]
        rrs = dict(db(f"rrs_{municipality}").rows("select resident_code, address_text from residents where resident_code = any(%s)", (subset,)))
        national = dict(db("national").rows("select resident_code, address_text from identity where resident_code = any(%s)", (subset,)))
        assert rrs == national


def test_a_version_gap_is_held_and_healed_from_the_tier_below(network, db):
    person = register(network, "131016")
    code = person["resident_code"]
    below = below_national(network, "131016")  # the prefecture server, or the CS without that tier
    below_db = network.nodes[below].node.database
    rrs = network.url("municipal_rrs.131016")
    for _ in range(2):
        assert httpx.post(f"{rrs}/v1/residents/{code}/move-within", auth=network.staff_auth(), json={"new_address": address_in("131016"), "move_date": date.today().isoformat()}).status_code == 200
    wait_until(lambda: db(below_db).value("select version from identity where resident_code = %s", (code,)) == 3, what=f"version 3 at {below}")
    wait_until(lambda: db("national").value("select version from identity where resident_code = %s", (code,)) == 3, what="version 3 at national")
    latest = db(below_db).value("select payload from identity_history where resident_code = %s and version = 3", (code,))

    # The national server loses versions 2 and 3 (as after restoring an old backup) and then receives
    # version 3 again: it must hold it, fetch version 2 from the tier below, and apply both in order.
    national_forgets_versions_after_first(network, code)
    redeliver_to_national(network, code, latest, municipality="131016")
    wait_until(lambda: db("national").value("select version from identity where resident_code = %s", (code,)) == 3, timeout=60, what="national healed to version 3")
    gap = db("national").rows("select expected_version, received_version, healed_at, healed_by from version_gaps where resident_code = %s", (code,))
    assert gap and gap[-1][0] == 2 and gap[-1][1] == 3 and gap[-1][2] is not None and below in gap[-1][3]
    assert db("national").value("select count(*) from held_changes where resident_code = %s", (code,)) == 0
    assert [r[0] for r in db("national").rows("select version from identity_history where resident_code = %s order by version", (code,))] == [1, 2, 3]
