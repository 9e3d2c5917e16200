"""Apache Kafka of the compose deployment: who may connect and what each may do, from the topology.

Clients authenticate with TLS client certificates (mutual TLS): the broker
requires one signed by the deployment's Kafka CA, and the certificate's CN
is the Kafka principal (``ssl.principal.mapping.rules``). Principals are the
party names of docs/configuration.md: ``cs-131016``, ``pref-13``,
``national``, ``provision-log``, ``agency-<agency id>``; ``kafka`` (the
broker itself) and ``kafka-admin`` (the one-shot ACL setup) are the only
super users. The ``StandardAuthorizer`` refuses whatever no ACL allows.

:func:`acls` is the rule: each node may write (and create) only the topics
it sends to and read only its own input topic; each agency reads only its
push topic. :func:`acl_script` turns it into ``deploy/kafka/acls.sh``, run by
the ``kafka-acls`` container with ``kafka-acls.sh``; :func:`make_tls` makes
the CA, the broker's and every principal's certificate (``services.cli
deploy-keys``). docs/security-broker.md explains the whole.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contracts import topics
from services.common.topology import AgencySpec, Node, Topology

BROKER_PRINCIPAL = "kafka"
ADMIN_PRINCIPAL = "kafka-admin"
#: node kinds that talk to Kafka (the register, municipal_rrs, reaches its CS over HTTP only)
KAFKA_NODE_KINDS = ("cs_gateway", "prefecture_server", "national_server", "provision_log")
#: the user the apache/kafka image runs as (``appuser``): owner of the broker's and the ACL setup's key files
KAFKA_IMAGE_UID = 1000
#: the user the jukinet image runs as (Dockerfile): owner of every other private file
JUKINET_IMAGE_UID = 10001
PARTITIONS = 3  # as services/common/kafka.py creates them

CA_VALID_DAYS = 3650
CERT_VALID_DAYS = 397


@dataclass(frozen=True, order=True)
class Acl:
    """``principal`` may ``operation`` on the topic named ``topic`` (literal, never a prefix)."""

    principal: str
    operation: str  # Kafka operation: Read, Write, Create
    topic: str


def uses_kafka(node: Node) -> bool:
    return node.kind in KAFKA_NODE_KINDS


def node_principal(node: Node) -> str:
    """The Kafka principal (certificate CN) of a node: its party name."""
    assert uses_kafka(node), f"{node.id} does not talk to Kafka"
    return node.party


def agency_principal(agency: AgencySpec) -> str:
    return f"agency-{agency.id}"


def principals(topology: Topology) -> list[str]:
    """Every client principal that gets a certificate (nodes, then agencies)."""
    return [node_principal(n) for n in topology.nodes if uses_kafka(n)] + [agency_principal(a) for a in topology.agencies]


def node_reads(topology: Topology, node: Node) -> list[str]:
    """The topics a node consumes: its own input."""
    match node.kind:
        case "cs_gateway":
            return [topics.cs_inbox(node.tenant)]
        case "prefecture_server":
            return [topics.prefecture_identity(node.tenant)]
        case "national_server":
            return [topics.NATIONAL_IDENTITY]
        case "provision_log":
            return [topics.PROVISIONS]
    return []


def node_writes(topology: Topology, node: Node) -> list[str]:
    """The topics a node sends to. Every consumer dead-letters what it refuses; every tier writes provision records."""
    match node.kind:
        case "cs_gateway":
            municipality = topology.municipality(node.tenant)
            assert municipality is not None
            upward_topic = topics.prefecture_identity(municipality.prefecture) if topology.network.prefecture_tier else topics.NATIONAL_IDENTITY
            inboxes = [topics.cs_inbox(m.code) for m in topology.municipalities if m.code != node.tenant]
            return [upward_topic, *inboxes, topics.PROVISIONS, topics.DEAD_LETTER]
        case "prefecture_server":
            return [topics.NATIONAL_IDENTITY, topics.PROVISIONS, topics.DEAD_LETTER]
        case "national_server":
            return [*(topics.agency_push(a.id) for a in topology.agencies), topics.PROVISIONS, topics.DEAD_LETTER]
        case "provision_log":
            return [topics.DEAD_LETTER]
    return []


def all_topics(topology: Topology) -> list[str]:
    names: list[str] = []
    for node in topology.nodes:
        for name in node_reads(topology, node) + node_writes(topology, node):
            if name not in names:
                names.append(name)
    return names


def acls(topology: Topology) -> list[Acl]:
    """The whole ACL list of the deployment, sorted.

    Write and Create (services create the topics they use if missing) on what
    a node sends to; Read (implies Describe) on its input. A node does not
    read what it writes: the producer's check for a broker that lost its log
    (services/common/kafka.py) is for the memory-only embedded broker and
    gives up quietly here. Consumers assign partitions themselves (no group),
    so no group ACL is needed.
    """
    out: set[Acl] = set()
    for node in topology.nodes:
        if not uses_kafka(node):
            continue
        who = node_principal(node)
        for name in node_writes(topology, node):
            out |= {Acl(who, "Write", name), Acl(who, "Create", name)}
        for name in node_reads(topology, node):
            out |= {Acl(who, "Read", name), Acl(who, "Create", name)}
    for agency in topology.agencies:
        out.add(Acl(agency_principal(agency), "Read", topics.agency_push(agency.id)))
    return sorted(out)


ACL_SCRIPT_HEAD = """\
#!/usr/bin/env bash
# Generated from deploy/topology.yaml by `python -m services.deploy_compose`; do not edit.
# Run once by the kafka-acls container as the super user kafka-admin (client certificate):
# creates every topic and grants each principal exactly its ACLs (docs/security-broker.md).
# Idempotent: run it again after a change of the topology; ACLs no longer generated are removed by hand.
set -euo pipefail
BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
CONFIG="${KAFKA_ADMIN_CONFIG:-/etc/kafka/admin/client.properties}"
BIN=/opt/kafka/bin
topic() {
  "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --create --if-not-exists --topic "$1" --partitions %(partitions)d --replication-factor 1
}
# acl <principal> <operation> <topic>...
acl() {
  local principal="$1" operation="$2"; shift 2
  local args=()
  for name in "$@"; do args+=(--topic "$name"); done
  "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --add --allow-principal "User:$principal" --operation "$operation" --resource-pattern-type literal "${args[@]}" >/dev/null
}
"""


def acl_script(topology: Topology) -> str:
    lines = [ACL_SCRIPT_HEAD % {"partitions": PARTITIONS}]
    lines += [f"topic {name}\n" for name in all_topics(topology)]
    grouped: dict[tuple[str, str], list[str]] = {}
    for a in acls(topology):
        grouped.setdefault((a.principal, a.operation), []).append(a.topic)
    lines += [f"acl {principal} {operation} {' '.join(names)}\n" for (principal, operation), names in grouped.items()]
    lines.append('echo "topics and ACLs set"\n')
    return "".join(lines)


def parse_acl_script(text: str) -> tuple[list[str], list[Acl]]:
    """The topics and ACLs an ``acls.sh`` sets (for the tests)."""
    made, granted = [], []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["topic"]:
            made.append(words[1])
        elif words[:1] == ["acl"]:
            granted += [Acl(words[1], words[2], name) for name in words[3:]]
    return made, sorted(granted)


# --- certificates --------------------------------------------------------------------------------------


def client_properties(keystore: str, truststore: str) -> str:
    """A Java client configuration (kafka-*.sh tools, the healthcheck) for a PEM key and certificate."""
    return (
        "security.protocol=SSL\n"
        "ssl.keystore.type=PEM\n"
        f"ssl.keystore.location={keystore}\n"
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={truststore}\n"
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # unencrypted PKCS#8: what Kafka's PEM key store reads without ssl.key.password
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    path.chmod(mode)


def _load_or_make_ca(private_dir: Path, public_path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = private_dir / "kafka-ca.key", private_dir / "kafka-ca.pem"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(_name("jukinet kafka CA")).issuer_name(_name("jukinet kafka CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(key_path, _pem_key(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    if not public_path.exists() or public_path.read_bytes() != cert.public_bytes(serialization.Encoding.PEM):
        _write(public_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return key, cert


def issue(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, common_name: str, *, server_names: tuple[str, ...] = (),
          days: int = CERT_VALID_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a certificate with CN ``common_name`` (the principal), for client authentication, and
    for a server too when it has ``server_names`` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server_names else [])
    builder = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server_names:
        alt: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _keystore(private_dir: Path, stem: str, ca_key, ca, common_name: str, server_names: tuple[str, ...], truststore: str, keystore: str) -> bool:
    """For the Java side: ``<stem>.pem`` (key and certificate, Kafka's PEM key store), ``ca.pem`` and ``client.properties``."""
    pem = private_dir / f"{stem}.pem"
    made = False
    if not pem.exists():
        key, cert = issue(ca_key, ca, common_name, server_names=server_names)
        _write(pem, _pem_key(key) + cert.public_bytes(serialization.Encoding.PEM), 0o600)
        made = True
    _write(private_dir / "ca.pem", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(private_dir / "client.properties", client_properties(keystore, truststore).encode(), 0o644)
    return made


def make_tls(out: Path, topology: Topology, *, broker_mount: str = "/etc/kafka/tls", admin_mount: str = "/etc/kafka/admin") -> list[str]:
    """The Kafka CA and certificates in the keys volume ``out``; what exists is kept. Returns who got a new certificate.

    - ``private/kafka-ca/``: the CA's key (mounted by no service) and certificate; ``public/kafka-ca.pem``
    - ``private/kafka/``: the broker's key store ``kafka.pem`` (CN kafka, names kafka and localhost), ``ca.pem``, ``client.properties``
    - ``private/kafka-admin/``: the same for the super user that sets the ACLs
    - ``private/<party>/kafka.key`` and ``kafka.crt`` for every node that talks to Kafka and every agency

    Run as root (the compose ``keys`` container), it gives the broker's and the
    admin's directories to the apache/kafka image's user and everything else
    to the jukinet image's user, so each container can read only its own.
    """
    ca_key, ca = _load_or_make_ca(out / "private" / "kafka-ca", out / "public" / "kafka-ca.pem")
    made: list[str] = []
    if _keystore(out / "private" / "kafka", "kafka", ca_key, ca, BROKER_PRINCIPAL, ("kafka", "localhost", "127.0.0.1"),
                 f"{broker_mount}/ca.pem", f"{broker_mount}/kafka.pem"):
        made.append(BROKER_PRINCIPAL)
    if _keystore(out / "private" / "kafka-admin", "kafka-admin", ca_key, ca, ADMIN_PRINCIPAL, (),
                 f"{admin_mount}/ca.pem", f"{admin_mount}/kafka-admin.pem"):
        made.append(ADMIN_PRINCIPAL)
    for principal in principals(topology):
        key_path, cert_path = out / "private" / principal / "kafka.key", out / "private" / principal / "kafka.crt"
        if key_path.exists() and cert_path.exists():
            continue
        key, cert = issue(ca_key, ca, principal)
        _write(key_path, _pem_key(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        made.append(principal)
    if os.geteuid() == 0:
        _give(out, JUKINET_IMAGE_UID)
        for own in ("kafka", "kafka-admin"):
            _give(out / "private" / own, KAFKA_IMAGE_UID)
    return made


def _give(root: Path, uid: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, uid, uid)
