"""A broker that comes back empty is noticed by every producer and consumer, and what it lost is sent again.

The network runs at its default settings: periodic reconciliation (every
300 s) is the safety net, not the cure, so convergence within the bound
below comes from the producers and consumers themselves
(services/common/kafka.py: a producer proves its last records after a
reconnect; a consumer checks the log it read). Two prefecture servers share
the national topic, and three CSs share theirs, so one producer's offsets can
be refilled by another's before it sends again. Five runs, each with the
broker killed and started empty in the middle of a stream of changes.
"""

from __future__ import annotations

import threading
import time

import pytest

from services.network import Network
from tests.conftest import TenantDb, topology_under_test, wait_until
from tests.e2e.test_faults import Load, divergence

RUNS = 5
CONVERGENCE_BOUND_SECONDS = 30.0


@pytest.fixture(scope="module")
def default_network(tmp_path_factory):
    net = Network.on_free_ports(tmp_path_factory.mktemp("broker-loss"), topology_path=topology_under_test())
    assert "JUKINET_RECONCILE_SECONDS" not in net.extra_env
    try:
        net.start()
        yield net
    finally:
        net.stop()


def test_every_run_converges_within_seconds_after_the_broker_comes_back_empty(default_network):
    net = default_network
    report = []
    for run in range(1, RUNS + 1):
        load = Load(net)
        writer = threading.Thread(target=load.run, daemon=True)
        writer.start()
        try:
            wait_until(load.progressed(12), timeout=60, what=f"run {run}: a stream of changes")
            net.broker.stop(kill=True)
            net.start_broker()
            wait_until(load.progressed(12), timeout=120, what=f"run {run}: changes acknowledged again after the broker came back")
        finally:
            load.stop.set()
            writer.join(timeout=30)
        stopped = time.monotonic()
        problems: list[str] = []

        def converged() -> bool:
            problems[:] = divergence(net)
            return not problems

        try:
            wait_until(converged, timeout=CONVERGENCE_BOUND_SECONDS, interval=0.5, what=f"run {run}: every tier converged")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still: {problems}; earlier runs: {report}") from None
        took = time.monotonic() - stopped
        ids = sorted(set(load.provisions))
        assert len(ids) == len(load.provisions), "a provision record id was handed out twice"
        log = TenantDb(net, "provlog")
        wait_until(lambda: log.value("select count(*) from provision_records where record_id = any(%s)", (ids,)) == len(ids),
                   timeout=CONVERGENCE_BOUND_SECONDS, what=f"run {run}: every provision record in the log")
        assert log.value("select count(*) from log_leaves where record_id = any(%s)", (ids,)) == len(ids), "a provision record appended twice"
        report.append(f"  run {run}: {load.acknowledged} changes, {len(ids)} provisions, converged {took:4.1f} s after the stream stopped")
    healed = TenantDb(net, "national").value("select coalesce(sum(healed), 0) from reconciliations")
    print("\n".join(["", "broker loss at default settings", *report, f"  periodic reconciliation healed {healed} person(s) meanwhile"]))
