"""Fault injection while changes keep coming (R-OPS-1, R-OWN-4).

On a private network, a writer registers births and 転居 at the three
counters and an agency queries the national server, without pause. Meanwhile
the suite kills (SIGKILL) one process of every kind of service and starts it
again, kills the broker and starts it empty (it forgets every record), and
crashes PostgreSQL (immediate shutdown) and starts it again. Afterwards every
tier must hold exactly what the registers hold — every acknowledged change,
each version once — within a bounded time, and every provision record the
agency was given must be in the provision log exactly once. What was
injected and how long convergence took is printed (``pytest -s``).

A broker that comes back empty loses records that were acknowledged but not
yet consumed. The Kafka outbox relays notice (an acknowledged offset goes
back) and send again what they sent lately; reconciliation (here every 8 s)
finds and heals any person still behind, which is why it is part of what
converges.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import date

import httpx
import psycopg
import pytest

from services.network import Network
from tests.conftest import TenantDb, topology_under_test, wait_until
from tests.e2e.helpers import address_in, birth_body

MUNICIPALITIES = ("131016", "131130", "272035")
CONVERGENCE_BOUND_SECONDS = 180.0


@dataclass
class Load:
    """A sustained stream of counter work and agency queries, and what the network acknowledged."""

    net: Network
    stop: threading.Event = field(default_factory=threading.Event)
    persons: dict[str, str] = field(default_factory=dict)  # resident code → municipality
    acknowledged: int = 0
    failed: int = 0
    provisions: list[str] = field(default_factory=list)  # record ids the agency was told about
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        rng = random.Random(11)
        token, token_at = None, 0.0
        staff = self.net.staff_auth()  # a clerk logged in at each register
        with httpx.Client(timeout=5.0) as client:
            while not self.stop.is_set():
                municipality = rng.choice(MUNICIPALITIES)
                mine = [c for c, m in list(self.persons.items()) if m == municipality]
                try:
                    if mine and rng.random() < 0.3:
                        if time.monotonic() - token_at > 200:
                            token, token_at = self.net.agency_token("pension-service"), time.monotonic()
                        r = client.post(f"{self.net.url('national_server.national')}/v1/persons/query", headers={"authorization": f"Bearer {token}"},
                                        json={"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": rng.choice(mine), "reason": "障害試験"})
                        if r.status_code == 200:
                            with self.lock:
                                self.provisions += [i for i in r.headers.get("X-Provision-Records", "").split(",") if i]
                        continue
                    if mine and rng.random() < 0.5:
                        r = client.post(f"{self.net.url(f'municipal_rrs.{municipality}')}/v1/residents/{rng.choice(mine)}/move-within", auth=staff,
                                        json={"new_address": address_in(municipality, rng), "move_date": date.today().isoformat()})
                    else:
                        r = client.post(f"{self.net.url(f'municipal_rrs.{municipality}')}/v1/residents", auth=staff, json=birth_body(municipality))
                        if r.status_code == 201:
                            self.persons[r.json()["resident_code"]] = municipality
                    if r.status_code in (200, 201):
                        self.acknowledged += 1
                    else:
                        self.failed += 1
                except (httpx.HTTPError, RuntimeError):  # RuntimeError: the clerk's login failed while a service was away
                    self.failed += 1
                    self.stop.wait(0.1)  # pace the load while a service is away

    def progressed(self, by: int):
        """A probe: ``by`` more changes acknowledged from now on."""
        target = self.acknowledged + by
        return lambda: self.acknowledged >= target


def _versions(net: Network, database: str, where: str = "true", params: tuple = ()) -> dict[str, int]:
    table = "residents" if database.startswith("rrs_") else "identity"
    return dict(TenantDb(net, database).rows(f"select resident_code, version from {table} where {where}", params))


def divergence(net: Network) -> list[str]:
    """Where a tier differs from the registers (empty when every tier holds the municipalities' truth)."""
    truth = {m: _versions(net, f"rrs_{m}") for m in MUNICIPALITIES}
    problems = []

    def compare(what: str, held: dict[str, int], expected: dict[str, int]) -> None:
        missing = [c for c, v in expected.items() if held.get(c) != v]
        extra = [c for c in held if c not in expected]
        if missing or extra:
            problems.append(f"{what}: {len(missing)} persons missing or behind, {len(extra)} unknown")

    for m in MUNICIPALITIES:
        compare(f"cs_{m}", _versions(net, f"cs_{m}", "municipality_code = %s", (m,)), truth[m])
    if net.topology.network.prefecture_tier:
        for p in net.topology.prefectures:
            area = [m.code for m in net.topology.municipalities if m.prefecture == p.code]
            compare(f"pref_{p.code}", _versions(net, f"pref_{p.code}", "municipality_code = any(%s)", (area,)), {c: v for m in area for c, v in truth[m].items()})
    compare("national", _versions(net, "national"), {c: v for m in MUNICIPALITIES for c, v in truth[m].items()})
    return problems


def restart_postgres(net: Network) -> None:
    """Start PostgreSQL after a crash; crash recovery may outlast pg_ctl's own wait on a busy machine."""
    try:
        net.postgres.start()
    except subprocess.CalledProcessError:
        pass  # pg_ctl stopped waiting; the server goes on recovering

    def accepts() -> bool:
        try:
            with net.postgres.admin_connect():
                return True
        except psycopg.OperationalError:
            return False

    wait_until(accepts, timeout=300, interval=1.0, what="PostgreSQL accepting connections after crash recovery")


@pytest.fixture(scope="module")
def faulty_network(tmp_path_factory):
    net = Network.on_free_ports(tmp_path_factory.mktemp("faults"), topology_path=topology_under_test())
    net.extra_env.update({"JUKINET_RECONCILE_SECONDS": "8", "JUKINET_RECONCILE_GRACE_SECONDS": "1", "JUKINET_SNAPSHOT_SECONDS": "20"})
    try:
        net.start()
        yield net
    finally:
        net.stop()


def test_every_tier_converges_after_kills_an_empty_broker_and_a_database_crash(faulty_network):
    net = faulty_network
    load = Load(net)
    writer = threading.Thread(target=load.run, daemon=True)
    injected: list[str] = []
    started = time.monotonic()

    def outage(what: str, stop, start, *, during: int = 5) -> None:
        t0 = time.monotonic()
        before_ok, before_failed = load.acknowledged, load.failed
        stop()
        wait_until(lambda: load.acknowledged >= before_ok + during or load.failed >= before_failed + 20, timeout=60, what=f"work during {what}")
        down = time.monotonic() - t0
        start()
        wait_until(load.progressed(3), timeout=120, what=f"changes acknowledged again after {what}")
        injected.append(f"{what:<40} at {t0 - started:6.1f} s, down {down:5.1f} s, back to work after {time.monotonic() - t0:5.1f} s "
                        f"({load.acknowledged - before_ok} acknowledged, {load.failed - before_failed} refused or failed meanwhile)")

    writer.start()
    try:
        wait_until(load.progressed(15), timeout=60, what="a stream of changes")
        # one process of every kind, SIGKILLed one after the other while the others are still coming back
        kinds = [n for n in ("municipal_rrs.131130", "cs_gateway.131016", "prefecture_server.13", "national_server.national", "provision_log.provision_log") if n in net.nodes]
        rolling = time.monotonic()
        for node in kinds:
            t0, before_ok, before_failed = time.monotonic(), load.acknowledged, load.failed
            net.stop_node(node, kill=True)
            wait_until(lambda: load.acknowledged >= before_ok + 3 or load.failed >= before_failed + 10, timeout=60, what=f"work while {node} is down")
            net.start_node(node, wait=False)
            injected.append(f"kill -9 {node:<33} at {t0 - started:6.1f} s, restarted {time.monotonic() - t0:4.1f} s later")
        for node in kinds:
            net.wait_healthy(node, timeout=180)
        wait_until(load.progressed(5), timeout=120, what="changes acknowledged after the kills")
        injected.append(f"  all {len(kinds)} back and working {time.monotonic() - rolling:5.1f} s after the first kill")
        outage("kill -9 the broker, start it empty", lambda: net.broker.stop(kill=True), net.start_broker, during=10)
        outage("PostgreSQL crash (immediate stop), restart", lambda: net.postgres.stop(mode="immediate"), lambda: restart_postgres(net))
        wait_until(load.progressed(10), timeout=120, what="changes after the last fault")
    finally:
        load.stop.set()
        writer.join(timeout=30)
    last_fault = time.monotonic()

    problems = []

    def converged() -> bool:
        problems[:] = divergence(net)
        return not problems

    wait_until(converged, timeout=CONVERGENCE_BOUND_SECONDS, interval=1.0, what=f"every tier converged (still: {problems})")
    convergence = time.monotonic() - last_fault

    # each version once at every tier: versions 1..n, one event each
    for database in ["national"] + [f"pref_{p.code}" for p in net.topology.prefectures if net.topology.network.prefecture_tier] + [f"cs_{m}" for m in MUNICIPALITIES]:
        bad = TenantDb(net, database).rows(
            "select h.resident_code from identity_history h join identity i using (resident_code)"
            " group by h.resident_code, i.version having count(*) <> count(distinct h.version) or count(distinct h.event_id) <> count(*)"
            " or max(h.version) <> i.version")
        assert not bad, (database, bad[:5])

    # every provision the agency was given is in the provision log, once
    ids = sorted(set(load.provisions))
    assert len(ids) == len(load.provisions), "a provision record id was handed out twice"
    log = TenantDb(net, "provlog")
    wait_until(lambda: log.value("select count(*) from provision_records where record_id = any(%s)", (ids,)) == len(ids), timeout=90, what="every provision record in the log")
    wait_until(lambda: log.value("select count(*) from log_leaves where record_id = any(%s)", (ids,)) == len(ids), timeout=90, what="every provision record in the Merkle log once")

    healed = TenantDb(net, "national").value("select coalesce(sum(healed), 0) from reconciliations") + sum(
        TenantDb(net, f"pref_{p.code}").value("select coalesce(sum(healed), 0) from reconciliations") for p in net.topology.prefectures if net.topology.network.prefecture_tier)
    report = ["", "fault injection report", *[f"  {line}" for line in injected],
              f"  load: {load.acknowledged} changes acknowledged by the registers, {load.failed} refused or failed during faults, "
              f"{len(load.persons)} persons, {len(ids)} provision records",
              f"  converged {convergence:.1f} s after the load stopped (bound {CONVERGENCE_BOUND_SECONDS:.0f} s); "
              f"reconciliation healed {healed} person(s) at the prefecture and national servers"]
    print("\n".join(report))
