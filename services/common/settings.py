"""Settings of one service process, from environment variables (``JUKINET_*``).

The launcher (local) and docker compose (production) set the same variables;
docs/configuration.md lists them. A service receives only its own database
credentials and its own private key.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.topology import Node, Topology, load_topology


class BrokerSecuritySettings(BaseSettings):
    """How this process's Kafka clients reach the broker (services/common/broker_security.py).

    The embedded broker takes plain connections only (docs/security-broker.md);
    the compose deployment uses ``SSL`` with a client certificate per node.
    """

    model_config = SettingsConfigDict(env_prefix="JUKINET_", extra="ignore")

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    kafka_ca_file: Path | None = None  # PEM: the CA the broker's certificate is checked against (SSL, SASL_SSL)
    kafka_cert_file: Path | None = None  # PEM: this node's client certificate (SSL with client authentication)
    kafka_key_file: Path | None = None  # PEM: its private key
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"  # SASL_SSL only
    kafka_sasl_username: str | None = None  # SASL_SSL only
    kafka_sasl_password_file: Path | None = None  # SASL_SSL only: file holding the password


class ServiceSettings(BrokerSecuritySettings):
    model_config = SettingsConfigDict(env_prefix="JUKINET_", extra="ignore")

    service: str  # node kind, e.g. "cs_gateway"
    tenant: str  # municipality code, prefecture code, "national" or "provision_log"
    database_url: str  # postgresql+psycopg://role:password@host:port/db — this tenant's only
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_watch_lost_logs: bool = True  # producers check that the broker still holds what they sent (an empty restart); off for a broker that keeps its log
    topology: Path = Path("deploy/topology.yaml")
    keys_dir: Path  # public keys of every party (<party>.pub)
    private_key: Path  # this party's Ed25519 private key
    pseudonym_key: Path | None = None  # national server only: master key of per-agency pseudonyms
    jpki_ca_key: Path | None = None  # national server only: private key of the JPKI certification authority
    host: str = "127.0.0.1"
    port: int = 8000
    peers: str = Field(default="{}", description="JSON map node id → base URL")
    trace_file: Path | None = None
    otlp_endpoint: str | None = None
    trace_sql: bool = False  # a span for every SQL statement too (costly under load); requests and messages are always traced
    outbox_poll_seconds: float = 0.2
    notices_wait_seconds: float = 20.0  # a register's long poll for notices at its CS: how long the CS holds a request with nothing to hand over
    resend_after_broker_reset_seconds: float = 900.0  # a broker back without its log: outbox rows sent this recently go again
    resync_poll_seconds: float = 2.0
    snapshot_seconds: float = 3600.0  # a CS sends a snapshot upward this often (0: only on operator request)
    reconcile_seconds: float = 300.0  # every tier compares with the tier below this often (0: only on operator request)
    message_max_age_seconds: float = 7 * 24 * 3600.0  # a consumer refuses a signed record older than this (the broker keeps a week)
    reconcile_grace_seconds: float = 2.0  # a difference is looked at again after this long before it is healed or reported
    idempotency_retention_seconds: float = 24 * 3600.0  # how long an Idempotency-Key and its answer are kept (docs/idempotency.md)
    http_keep_alive_seconds: float = 75.0  # the HTTP server keeps an idle client connection open this long (docs/configuration.md)
    http_client_keepalive_seconds: float = 30.0  # this node's HTTP client reuses an idle pooled connection only this long: below any server's

    @cached_property
    def topology_model(self) -> Topology:
        return load_topology(self.topology)

    @cached_property
    def node(self) -> Node:
        return Node(kind=self.service, tenant=self.tenant)

    @cached_property
    def peer_urls(self) -> dict[str, str]:
        return json.loads(self.peers)

    def peer(self, node_id: str) -> str:
        try:
            return self.peer_urls[node_id]
        except KeyError:
            raise LookupError(f"no address configured for {node_id}") from None
