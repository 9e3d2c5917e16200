"""The options every Kafka client of a process passes to aiokafka, from the ``JUKINET_KAFKA_*`` settings.

Each ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``
is made with ``**broker_client_options()``: nothing for ``PLAINTEXT`` (the
embedded broker, which cannot authenticate clients: docs/security-broker.md),
a TLS context with this node's client certificate for ``SSL`` (the compose
deployment: Apache Kafka with ``ssl.client.auth=required``, the certificate's
CN is the Kafka principal), or TLS plus SASL/SCRAM for ``SASL_SSL``.

The files are read once per process: a rotated certificate or password takes
effect when the service restarts.
"""

from __future__ import annotations

import ssl
from functools import cache

from aiokafka.helpers import create_ssl_context

from services.common.settings import BrokerSecuritySettings


class BrokerSecurityError(ValueError):
    """The ``JUKINET_KAFKA_*`` settings do not describe a usable connection."""


def client_options(settings: BrokerSecuritySettings) -> dict:
    """aiokafka keyword arguments for these settings."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    if settings.kafka_ca_file is None:
        raise BrokerSecurityError(f"JUKINET_KAFKA_SECURITY_PROTOCOL={protocol} needs JUKINET_KAFKA_CA_FILE (the broker's CA)")
    if (settings.kafka_cert_file is None) != (settings.kafka_key_file is None):
        raise BrokerSecurityError("JUKINET_KAFKA_CERT_FILE and JUKINET_KAFKA_KEY_FILE go together")
    if protocol == "SSL" and settings.kafka_cert_file is None:
        raise BrokerSecurityError("JUKINET_KAFKA_SECURITY_PROTOCOL=SSL authenticates with a client certificate: set JUKINET_KAFKA_CERT_FILE and JUKINET_KAFKA_KEY_FILE")
    context = create_ssl_context(
        cafile=str(settings.kafka_ca_file),
        certfile=str(settings.kafka_cert_file) if settings.kafka_cert_file else None,
        keyfile=str(settings.kafka_key_file) if settings.kafka_key_file else None,
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    options: dict = {"security_protocol": protocol, "ssl_context": context}
    if protocol == "SASL_SSL":
        if not settings.kafka_sasl_username or settings.kafka_sasl_password_file is None:
            raise BrokerSecurityError("JUKINET_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs JUKINET_KAFKA_SASL_USERNAME and JUKINET_KAFKA_SASL_PASSWORD_FILE")
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password_file.read_text(encoding="utf-8").strip(),
        }
    return options


@cache
def _from_environment() -> dict:
    return client_options(BrokerSecuritySettings())


def broker_client_options() -> dict:
    """aiokafka keyword arguments of this process (``JUKINET_KAFKA_*`` environment), made once.

    The same dict (and SSL context) is handed to every client; aiokafka does
    not change it.
    """
    return _from_environment()
