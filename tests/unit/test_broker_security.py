"""Kafka client options from the JUKINET_KAFKA_* settings, and the compose deployment's certificates
doing mutual TLS: the broker's certificate accepts a node's, and refuses a client without one or
with one from another CA (a TLS server here stands in for Kafka, which needs a Docker engine)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from services.common.broker_security import BrokerSecurityError, client_options
from services.common.settings import BrokerSecuritySettings
from services.common.topology import load_topology
from services.deploy_compose import DEPLOY
from services.deploy_kafka import make_tls

TOPOLOGY = load_topology(DEPLOY / "topology.yaml")


def settings(**values) -> BrokerSecuritySettings:
    return BrokerSecuritySettings.model_validate(values)


def test_plaintext_is_the_default_and_adds_nothing(monkeypatch):
    for name in ("JUKINET_KAFKA_SECURITY_PROTOCOL", "JUKINET_KAFKA_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert client_options(BrokerSecuritySettings()) == {}


def test_incomplete_settings_are_refused(tmp_path):
    make_tls(tmp_path, TOPOLOGY)
    ca, cert, key = tmp_path / "public" / "kafka-ca.pem", tmp_path / "private" / "cs-131016" / "kafka.crt", tmp_path / "private" / "cs-131016" / "kafka.key"
    with pytest.raises(BrokerSecurityError, match="CA_FILE"):
        client_options(settings(kafka_security_protocol="SSL", kafka_cert_file=cert, kafka_key_file=key))
    with pytest.raises(BrokerSecurityError, match="client certificate"):
        client_options(settings(kafka_security_protocol="SSL", kafka_ca_file=ca))
    with pytest.raises(BrokerSecurityError, match="go together"):
        client_options(settings(kafka_security_protocol="SSL", kafka_ca_file=ca, kafka_cert_file=cert))
    with pytest.raises(BrokerSecurityError, match="SASL_USERNAME"):
        client_options(settings(kafka_security_protocol="SASL_SSL", kafka_ca_file=ca))
    with pytest.raises(ValueError):
        settings(kafka_security_protocol="SASL_PLAINTEXT")  # credentials in clear: not offered


def test_sasl_ssl_reads_the_password_file(tmp_path):
    make_tls(tmp_path, TOPOLOGY)
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    options = client_options(settings(kafka_security_protocol="SASL_SSL", kafka_ca_file=tmp_path / "public" / "kafka-ca.pem",
                                      kafka_sasl_username="cs-131016", kafka_sasl_password_file=password))
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "cs-131016" and options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def _broker_context(keys) -> ssl.SSLContext:
    """What Kafka does with ssl.client.auth=required and the generated PEM key store."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(keys / "private" / "kafka" / "ca.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(keys / "private" / "kafka" / "kafka.pem"))
    return context


async def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext, server_hostname: str = "localhost") -> str:
    """The CN the server saw, after a TLS handshake on loopback; raises when either side refuses."""
    seen: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        if not seen.done():
            seen.set_result(dict(item[0] for item in peer["subject"])["commonName"] if peer else None)
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=client_context, server_hostname=server_hostname), 5)
        assert await asyncio.wait_for(reader.read(2), 5) == b"ok"
        writer.close()
        return await asyncio.wait_for(seen, 5)
    finally:
        server.close()
        await server.wait_closed()


def test_a_node_certificate_passes_mutual_tls_with_the_broker_and_names_its_principal(tmp_path):
    make_tls(tmp_path, TOPOLOGY)
    node = tmp_path / "private" / "cs-131016"
    options = client_options(settings(kafka_security_protocol="SSL", kafka_ca_file=tmp_path / "public" / "kafka-ca.pem",
                                      kafka_cert_file=node / "kafka.crt", kafka_key_file=node / "kafka.key"))
    assert options["security_protocol"] == "SSL"
    assert asyncio.run(_handshake(_broker_context(tmp_path), options["ssl_context"])) == "cs-131016"
    # the broker's certificate names the compose host too
    assert asyncio.run(_handshake(_broker_context(tmp_path), options["ssl_context"], server_hostname="kafka")) == "cs-131016"


def test_the_broker_refuses_a_client_without_a_certificate_or_with_another_ca(tmp_path):
    make_tls(tmp_path / "ours", TOPOLOGY)
    make_tls(tmp_path / "theirs", TOPOLOGY)
    broker = _broker_context(tmp_path / "ours")
    anonymous = ssl.create_default_context(cafile=str(tmp_path / "ours" / "public" / "kafka-ca.pem"))
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, AssertionError)):
        asyncio.run(_handshake(broker, anonymous))
    stranger = client_options(settings(kafka_security_protocol="SSL", kafka_ca_file=tmp_path / "ours" / "public" / "kafka-ca.pem",
                                       kafka_cert_file=tmp_path / "theirs" / "private" / "cs-131016" / "kafka.crt",
                                       kafka_key_file=tmp_path / "theirs" / "private" / "cs-131016" / "kafka.key"))["ssl_context"]
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, AssertionError)):
        asyncio.run(_handshake(broker, stranger))
