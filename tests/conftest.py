"""The whole network, started once per test session on the embedded stack.

Tests talk to it exactly as operators and agencies do: HTTP to the services,
Kafka to the broker, and (to check what each tier stores) SQL with that
tenant's own credentials.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from services.network import REPO_ROOT, Network

T = TypeVar("T")

#: ``JUKINET_TEST_TOPOLOGY`` picks the topology every test network runs (R-NET-4: the suite
#: must pass with and without prefecture servers); ``make test`` runs the e2e tests on both.
TOPOLOGIES = {
    "with-prefectures": REPO_ROOT / "deploy" / "topology.yaml",
    "without-prefectures": REPO_ROOT / "deploy" / "topology-without-prefectures.yaml",
}


def topology_under_test() -> Path:
    """The topology file chosen by ``JUKINET_TEST_TOPOLOGY`` (a name above, or a path)."""
    chosen = os.environ.get("JUKINET_TEST_TOPOLOGY", "with-prefectures")
    path = TOPOLOGIES.get(chosen, Path(chosen))
    if not path.is_file():
        raise pytest.UsageError(f"JUKINET_TEST_TOPOLOGY={chosen!r}: neither {', '.join(TOPOLOGIES)} nor a topology file")
    return path


def pytest_report_header(config) -> str:
    return f"jukinet topology: {topology_under_test()}"


def wait_until(probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def running_network(root: Path, topology_path: Path | None = None) -> Iterator[Network]:
    """A whole network on free ports under ``root`` (the topology under test unless given), stopped afterwards whatever happens."""
    net = Network.on_free_ports(root, topology_path=topology_path or topology_under_test())
    try:
        net.start()
        yield net
    finally:
        net.stop()


@pytest.fixture(scope="session")
def network(tmp_path_factory) -> Network:
    with running_network(tmp_path_factory.mktemp("network")) as net:
        yield net


class TenantDb:
    """SQL access to one tenant's database with that tenant's own role."""

    def __init__(self, net: Network, database: str):
        self.net = net
        self.database = database

    def connect(self) -> psycopg.Connection:
        cred = self.net.credentials[self.database]
        return psycopg.connect(host=self.net.postgres.host, port=self.net.postgres.port, user=cred.role, password=cred.password, dbname=cred.database, autocommit=True)

    def rows(self, query: str, params: tuple = ()) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(query, params).fetchall()

    def value(self, query: str, params: tuple = ()):
        rows = self.rows(query, params)
        return rows[0][0] if rows else None


@pytest.fixture(scope="session")
def db(network) -> Callable[[str], TenantDb]:
    return lambda database: TenantDb(network, database)
