"""Runs the whole network of a topology on this machine: embedded PostgreSQL,
the embedded broker, and every node as its own process.

``make run`` and the test suite both use :class:`Network`, so tests exercise
exactly what an operator starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from contracts import topics
from services.common.embedded import EmbeddedBroker, EmbeddedPostgres, TenantCredentials, free_port_block
from services.common.encryption_keys import generate_encryption_key_pair
from services.common.kafka import ensure_topics
from services.common.tokens import RefreshingToken, generate_key_pair, load_private_key, sign_token
from services.common.topology import Node, Topology, load_topology
from services.staff_logins import StaffLogins

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Ports:
    base: int = 8100
    postgres: int = 54329
    kafka: int = 19092


@dataclass
class RunningNode:
    node: Node
    port: int
    process: subprocess.Popen | None = None
    log_path: Path | None = None


@dataclass
class Network:
    root: Path
    topology_path: Path = REPO_ROOT / "deploy" / "topology.yaml"
    ports: Ports = field(default_factory=Ports)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.topology: Topology = load_topology(self.topology_path)
        self.postgres = EmbeddedPostgres(self.root / "postgres", self.ports.postgres)
        self.broker = EmbeddedBroker(self.ports.kafka, self.root / "logs" / "broker.log")
        self.nodes: dict[str, RunningNode] = {n.id: RunningNode(node=n, port=self.ports.base + i) for i, n in enumerate(self.topology.nodes)}
        self.credentials: dict[str, TenantCredentials] = {}
        self.staff = StaffLogins(self.root, lambda code: self.url(f"municipal_rrs.{code}"))

    @classmethod
    def on_free_ports(cls, root: Path, *, topology_path: Path | None = None) -> "Network":
        """A network under ``root/net`` whose services, PostgreSQL and broker use a block of free ports
        (tests and benchmarks run beside ``make run`` and each other)."""
        options = {"topology_path": topology_path} if topology_path is not None else {}
        block = free_port_block(len(load_topology(options.get("topology_path", cls.topology_path)).nodes) + 2)
        return cls(root=root / "net", ports=Ports(base=block + 2, postgres=block, kafka=block + 1), **options)

    # --- addresses and credentials ------------------------------------------------
    @property
    def private_keys(self) -> Path:
        return self.root / "keys" / "private"

    @property
    def public_keys(self) -> Path:
        return self.root / "keys" / "public"

    @property
    def pseudonym_key(self) -> Path:
        """Master key of per-agency pseudonyms; only the national server receives it."""
        return self.private_keys / "national-pseudonym.key"

    @property
    def jpki_ca_key(self) -> Path:
        """Private key of the JPKI certification authority; only the national server receives it."""
        return self.private_keys / "national-jpki-ca.key"

    def url(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.nodes[node_id].port}"

    def database_url(self, node_id: str) -> str:
        return self.credentials[self.nodes[node_id].node.database].url(self.postgres.host, self.postgres.port)

    def trace_file(self, node_id: str) -> Path:
        return self.root / "traces" / f"{node_id}.jsonl"

    def provider_for(self, agency_id: str) -> str:
        """The provider (token audience) that serves this agency's affairs in this topology: the national
        server, or a prefectural agency's prefecture server (the national server without that tier, R-NET-4)."""
        agency = self.topology.agency(agency_id)
        if agency is None or agency.prefecture is None:
            return "national"
        return self.topology.prefecture_node(agency.prefecture).party

    def agency_token(self, agency_id: str, *, audience: str | None = None, lifetime_seconds: int = 300) -> str:
        """A token the agency signs for ``audience`` (by default the provider that serves it here)."""
        key = load_private_key(self.private_keys / f"agency-{agency_id}.key")
        return sign_token(key, issuer=f"agency-{agency_id}", audience=audience or self.provider_for(agency_id), lifetime_seconds=lifetime_seconds)

    def agency_auth(self, agency_id: str, *, audience: str | None = None) -> RefreshingToken:
        """The agency's token as an ``httpx`` auth, signed anew before it ends: for a client that runs longer than
        a token may live (benchmarks, bulk jobs)."""
        return RefreshingToken(lambda: self.agency_token(agency_id, audience=audience))

    # --- lifecycle ----------------------------------------------------------------
    def prepare(self) -> None:
        """Start PostgreSQL and the broker; create tenants, keys and topics."""
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        self.postgres.close_shared_databases()
        for running in self.nodes.values():
            self.credentials[running.node.database] = self.postgres.ensure_tenant(running.node.database)
            generate_key_pair(self.private_keys, self.public_keys, running.node.party)
        for agency in self.topology.agencies:
            generate_key_pair(self.private_keys, self.public_keys, f"agency-{agency.id}")
            generate_encryption_key_pair(self.private_keys, self.public_keys, f"agency-{agency.id}")  # its push notifications are sealed to it
        generate_key_pair(self.private_keys, self.public_keys, "operator")  # signs operator commands (services.cli)
        if not self.pseudonym_key.exists():
            self.pseudonym_key.write_bytes(os.urandom(64))
            self.pseudonym_key.chmod(0o600)
        from services.national_server.jpki_store import generate_ca_key_file

        generate_ca_key_file(self.jpki_ca_key)
        self.start_broker()

    def start_broker(self) -> None:
        self.broker.start()
        names = [topics.NATIONAL_IDENTITY, topics.PROVISIONS, topics.DEAD_LETTER]
        names += [topics.prefecture_identity(p.code) for p in self.topology.prefectures]
        names += [topics.cs_inbox(m.code) for m in self.topology.municipalities]
        asyncio.run(ensure_topics(self.broker.bootstrap, names))

    def start(self) -> None:
        self.prepare()
        for node_id in self.nodes:
            self.start_node(node_id, wait=False)
        for node_id in self.nodes:
            self.wait_healthy(node_id)
        self.write_addresses()
        self.staff.enrol_roles(m.code for m in self.topology.municipalities)

    def staff_headers(self, municipality: str, role: str = "clerk", *, username: str | None = None) -> dict[str, str]:
        """``Authorization`` of a member of staff of the municipality's register: the role's own account
        (username = role), or ``username`` enrolled with that role on first use (services/staff_logins.py)."""
        return self.staff.headers(municipality, role, username=username)

    def staff_auth(self, role: str = "clerk", *, username: str | None = None) -> httpx.Auth:
        """The same as an ``httpx.Auth`` (``auth=net.staff_auth()``): it logs in at whichever register the request goes to."""
        return self.staff.auth(self.municipality_at, role, username=username)

    def municipality_at(self, url) -> str | None:
        """The municipality whose register listens at ``url`` (None for any other node)."""
        port = httpx.URL(str(url)).port
        for running in self.nodes.values():
            if running.port == port and running.node.kind == "municipal_rrs":
                return running.node.tenant
        return None

    def write_addresses(self) -> None:
        """``network.json`` in the data directory: where every node listens and which topology runs, for the operator CLI."""
        addresses = {"nodes": {nid: self.url(nid) for nid in self.nodes}, "postgres": f"{self.postgres.host}:{self.postgres.port}", "kafka": self.broker.bootstrap,
                     "topology": str(Path(self.topology_path).resolve())}
        (self.root / "network.json").write_text(json.dumps(addresses, indent=2))

    def node_env(self, node_id: str) -> dict[str, str]:
        running = self.nodes[node_id]
        node = running.node
        peers = {nid: self.url(nid) for nid in self.nodes}
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("JUKINET_")},
            "PYTHONPATH": str(REPO_ROOT),
            "JUKINET_SERVICE": node.kind,
            "JUKINET_TENANT": node.tenant,
            "JUKINET_DATABASE_URL": self.database_url(node_id),
            "JUKINET_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "JUKINET_TOPOLOGY": str(self.topology_path),
            "JUKINET_KEYS_DIR": str(self.public_keys),
            "JUKINET_PRIVATE_KEY": str(self.private_keys / f"{node.party}.key"),
            "JUKINET_HOST": "127.0.0.1",
            "JUKINET_PORT": str(running.port),
            "JUKINET_PEERS": json.dumps(peers),
            "JUKINET_TRACE_FILE": str(self.trace_file(node_id)),
            **self.extra_env,
        }
        if node.kind == "national_server":
            env["JUKINET_PSEUDONYM_KEY"] = str(self.pseudonym_key)
            env["JUKINET_JPKI_CA_KEY"] = str(self.jpki_ca_key)
        return env

    def start_node(self, node_id: str, *, wait: bool = True) -> None:
        running = self.nodes[node_id]
        running.log_path = self.root / "logs" / f"{node_id}.log"
        log = running.log_path.open("ab")
        running.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{running.node.kind}"], env=self.node_env(node_id), cwd=REPO_ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if wait:
            self.wait_healthy(node_id)

    def wait_healthy(self, node_id: str, timeout: float = 90.0) -> None:
        running = self.nodes[node_id]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if running.process is not None and running.process.poll() is not None:
                raise RuntimeError(f"{node_id} exited with {running.process.returncode}:\n{self.log_tail(node_id)}")
            try:
                if httpx.get(f"{self.url(node_id)}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{node_id} not healthy after {timeout}s:\n{self.log_tail(node_id)}")

    def log_tail(self, node_id: str, lines: int = 40) -> str:
        path = self.nodes[node_id].log_path
        if path is None or not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop_node(self, node_id: str, *, kill: bool = False) -> None:
        running = self.nodes[node_id]
        if running.process is None:
            return
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                running.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()
        running.process = None

    def stop(self) -> None:
        for node_id in reversed(list(self.nodes)):
            self.stop_node(node_id)
        self.broker.stop()
        self.postgres.stop()
