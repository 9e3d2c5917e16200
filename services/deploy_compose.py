"""The docker compose deployment of a topology, generated so that it cannot drift
from the local run.

``python -m services.deploy_compose`` writes ``deploy/compose.yaml``,
``deploy/postgres/init-tenants.sh`` and ``deploy/kafka/acls.sh`` from
``deploy/topology.yaml``. Every
service gets exactly the ``JUKINET_*`` variables that ``services/network.py``
gives it locally (docs/configuration.md), with container addresses; database
and role names are ``Node.database`` as in the embedded run; the PostgreSQL
init script creates one database and one login role per tenant, as
``services/common/embedded.py`` does. A test checks the checked-in files equal
what this module generates and validates them (compose-spec JSON schema,
hadolint for the Dockerfile).

Kafka takes only mutual-TLS clients and authorizes each by ACLs
(services/deploy_kafka.py, docs/security-broker.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from services.common.topology import Node, Topology, load_topology
from services.deploy_kafka import ADMIN_PRINCIPAL, BROKER_PRINCIPAL, acl_script, uses_kafka

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY = REPO_ROOT / "deploy"
IMAGE = "jukinet:latest"
HTTP_PORT = 8000
FIRST_HOST_PORT = 8100
KEYS_MOUNT = "/run/jukinet"
KAFKA_IMAGE = "apache/kafka:4.1.0"
KAFKA_TLS_MOUNT = "/etc/kafka/tls"  # the broker's key store, CA and client.properties (keys volume, private/kafka)
KAFKA_ADMIN_MOUNT = "/etc/kafka/admin"  # the ACL setup's (private/kafka-admin)
#: the certificate's subject is CN=<principal> and nothing else: the principal is the CN
#: (``$$`` is a literal ``$`` for compose)
KAFKA_PRINCIPAL_RULES = "RULE:^CN=([a-z0-9.-]+)$$/$$1/,DEFAULT"

#: Variables the local run sets that a container deployment replaces (spans go to Jaeger instead of files).
LOCAL_ONLY = {"JUKINET_TRACE_FILE"}


def service_name(node: Node) -> str:
    """Compose service and host name of a node: ``cs_gateway.131016`` → ``cs-gateway-131016``."""
    return node.id.replace("_", "-").replace(".", "-")


def password_variable(database: str) -> str:
    """The ``deploy/.env`` variable holding a tenant's database password."""
    return f"JUKINET_DBPW_{database.upper()}"


def node_environment(topology: Topology, node: Node) -> dict[str, str]:
    """The ``JUKINET_*`` environment of one node's container."""
    peers = {n.id: f"http://{service_name(n)}:{HTTP_PORT}" for n in topology.nodes}
    env = {
        "JUKINET_SERVICE": node.kind,
        "JUKINET_TENANT": node.tenant,
        "JUKINET_DATABASE_URL": f"postgresql+psycopg://{node.database}:${{{password_variable(node.database)}:?run: python -m services.cli deploy-secrets}}@postgres:5432/{node.database}",
        "JUKINET_KAFKA_BOOTSTRAP": "kafka:9092",
        "JUKINET_TOPOLOGY": "/app/deploy/topology.yaml",
        "JUKINET_KEYS_DIR": f"{KEYS_MOUNT}/public",
        "JUKINET_PRIVATE_KEY": f"{KEYS_MOUNT}/private/{node.party}.key",
        "JUKINET_HOST": "0.0.0.0",
        "JUKINET_PORT": str(HTTP_PORT),
        "JUKINET_PEERS": json.dumps(peers, separators=(",", ":")),
        "JUKINET_OTLP_ENDPOINT": "http://jaeger:4318",
    }
    if uses_kafka(node):  # mutual TLS: the CN of the node's certificate is its Kafka principal (services/deploy_kafka.py)
        env["JUKINET_KAFKA_SECURITY_PROTOCOL"] = "SSL"
        env["JUKINET_KAFKA_CA_FILE"] = f"{KEYS_MOUNT}/public/kafka-ca.pem"
        env["JUKINET_KAFKA_CERT_FILE"] = f"{KEYS_MOUNT}/private/kafka.crt"
        env["JUKINET_KAFKA_KEY_FILE"] = f"{KEYS_MOUNT}/private/kafka.key"
        # Kafka keeps its log (replicated, acks=all): no empty restart to watch for, and the ACLs rightly keep a
        # producer from reading back topics others write to (docs/security-broker.md)
        env["JUKINET_KAFKA_WATCH_LOST_LOGS"] = "false"
    if node.kind == "national_server":
        env["JUKINET_PSEUDONYM_KEY"] = f"{KEYS_MOUNT}/private/national-pseudonym.key"
        env["JUKINET_JPKI_CA_KEY"] = f"{KEYS_MOUNT}/private/national-jpki-ca.key"
    return env


def compose(topology: Topology, topology_file: str = "topology.yaml") -> dict:
    databases = [n.database for n in topology.nodes]
    services: dict[str, dict] = {
        "postgres": {
            "image": "postgres:18",
            "environment": {
                "POSTGRES_PASSWORD": "${JUKINET_POSTGRES_PASSWORD:?run: python -m services.cli deploy-secrets}",
                "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8",
                **{password_variable(db): f"${{{password_variable(db)}:?run: python -m services.cli deploy-secrets}}" for db in databases},
            },
            "command": ["postgres", "-c", "password_encryption=scram-sha-256", "-c", "max_connections=300"],
            "volumes": ["pgdata:/var/lib/postgresql", "./postgres/init-tenants.sh:/docker-entrypoint-initdb.d/10-tenants.sh:ro"],
            "healthcheck": {"test": ["CMD-SHELL", "pg_isready -U postgres"], "interval": "5s", "timeout": "3s", "retries": 20},
        },
        "kafka": {
            "image": KAFKA_IMAGE,
            # Listeners are named CLIENTS and CONTROLLER, both SSL: the image's own SSL set-up (triggered by
            # an advertised "SSL://" listener) wants JKS stores with passwords; these are PEM files.
            "environment": {
                "KAFKA_NODE_ID": "1",
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_LISTENERS": "CLIENTS://:9092,CONTROLLER://localhost:9093",
                "KAFKA_ADVERTISED_LISTENERS": "CLIENTS://kafka:9092",
                "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                "KAFKA_INTER_BROKER_LISTENER_NAME": "CLIENTS",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:SSL,CLIENTS:SSL",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
                "KAFKA_SSL_CLIENT_AUTH": "required",
                "KAFKA_SSL_KEYSTORE_TYPE": "PEM",
                "KAFKA_SSL_KEYSTORE_LOCATION": f"{KAFKA_TLS_MOUNT}/kafka.pem",
                "KAFKA_SSL_TRUSTSTORE_TYPE": "PEM",
                "KAFKA_SSL_TRUSTSTORE_LOCATION": f"{KAFKA_TLS_MOUNT}/ca.pem",
                "KAFKA_SSL_PRINCIPAL_MAPPING_RULES": KAFKA_PRINCIPAL_RULES,
                "KAFKA_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "KAFKA_SUPER_USERS": f"User:{BROKER_PRINCIPAL};User:{ADMIN_PRINCIPAL}",
                "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "false",
                "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
                "KAFKA_NUM_PARTITIONS": "3",
                "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
            },
            "volumes": [
                "kafka-data:/var/lib/kafka/data",
                {"type": "volume", "source": "keys", "target": KAFKA_TLS_MOUNT, "read_only": True, "volume": {"subpath": "private/kafka"}},
            ],
            "depends_on": {"keys": {"condition": "service_completed_successfully"}},
            "healthcheck": {
                "test": ["CMD-SHELL", f"/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092 --command-config {KAFKA_TLS_MOUNT}/client.properties >/dev/null"],
                "interval": "10s", "timeout": "20s", "retries": 20,
            },
        },
        "kafka-acls": {
            "image": KAFKA_IMAGE,
            "command": ["bash", "/acls.sh"],
            "volumes": [
                {"type": "volume", "source": "keys", "target": KAFKA_ADMIN_MOUNT, "read_only": True, "volume": {"subpath": "private/kafka-admin"}},
                "./kafka/acls.sh:/acls.sh:ro",
            ],
            "depends_on": {"kafka": {"condition": "service_healthy"}},
            "restart": "no",
        },
        "jaeger": {
            "image": "jaegertracing/jaeger:2.11.0",
            "ports": ["16686:16686"],
            "expose": ["4318"],
        },
        "keys": {
            "image": IMAGE,
            "build": {"context": "..", "dockerfile": "Dockerfile"},
            "command": ["python", "-m", "services.cli", "deploy-keys", "--out", "/keys", "--topology", "/app/deploy/topology.yaml"],
            "volumes": ["keys:/keys"],
            "user": "root",  # to give the broker's key files to the apache/kafka image's user (services/deploy_kafka.py)
            "restart": "no",
        },
    }
    for index, node in enumerate(topology.nodes):
        services[service_name(node)] = {
            "image": IMAGE,
            "command": ["python", "-m", f"services.{node.kind}"],
            "environment": node_environment(topology, node),
            "volumes": [
                {"type": "volume", "source": "keys", "target": f"{KEYS_MOUNT}/public", "read_only": True, "volume": {"subpath": "public"}},
                {"type": "volume", "source": "keys", "target": f"{KEYS_MOUNT}/private", "read_only": True, "volume": {"subpath": f"private/{node.party}"}},
                f"./{topology_file}:/app/deploy/topology.yaml:ro",
            ],
            "ports": [f"{FIRST_HOST_PORT + index}:{HTTP_PORT}"],
            "depends_on": {
                "postgres": {"condition": "service_healthy"},
                "kafka": {"condition": "service_healthy"},
                "kafka-acls": {"condition": "service_completed_successfully"},
                "keys": {"condition": "service_completed_successfully"},
            },
            "healthcheck": {
                "test": ["CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{HTTP_PORT}/ready', timeout=3)"],
                "interval": "10s", "timeout": "5s", "retries": 12, "start_period": "30s",
            },
            "restart": "unless-stopped",
        }
    return {"name": "jukinet", "services": services, "volumes": {"pgdata": {}, "kafka-data": {}, "keys": {}}}


HEADER = """\
# Generated from deploy/topology.yaml by `python -m services.deploy_compose`; do not edit.
# Before the first `docker compose up`: `python -m services.cli deploy-secrets` writes deploy/.env
# (database passwords). Private keys and the Kafka certificates are made inside the `keys` container;
# each node mounts only its own private key directory. Kafka takes mutual-TLS clients only and
# authorizes them by the ACLs of kafka/acls.sh. See docs/deploy.md and docs/security-broker.md.
"""


def compose_text(topology: Topology) -> str:
    return HEADER + yaml.safe_dump(compose(topology), sort_keys=False, allow_unicode=True, width=200)


def init_script(topology: Topology) -> str:
    """PostgreSQL init script: one database and one login role per tenant (SCRAM), as the embedded run does."""
    lines = [
        "#!/usr/bin/env bash",
        "# Generated from deploy/topology.yaml by `python -m services.deploy_compose`; do not edit.",
        "# One database and one login role per tenant; no role can connect to another tenant's database,",
        "# nor to postgres or template1, nor create temporary tables anywhere but in its own.",
        "set -euo pipefail",
        'psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<-\'SQL\'',
        "\trevoke all on database postgres from public;",
        "\trevoke all on database template1 from public;",
        "\tSQL",
        "tenant() {",
        '  local name="$1" password="$2"',
        '  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v name="$name" -v password="$password" <<-\'SQL\'',
        "\tcreate role :\"name\" with login nosuperuser nocreatedb nocreaterole password :'password';",
        "\tcreate database :\"name\" owner :\"name\";",
        "\trevoke all on database :\"name\" from public;",
        "\tgrant connect on database :\"name\" to :\"name\";",
        "\tSQL",
        '  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$name" -v name="$name" <<-\'SQL\'',
        "\trevoke all on schema public from public;",
        "\tgrant all on schema public to :\"name\";",
        "\tSQL",
        "}",
    ]
    lines += [f'tenant {n.database} "${{{password_variable(n.database)}}}"' for n in topology.nodes]
    return "\n".join(lines) + "\n"


def write(topology_path: Path = DEPLOY / "topology.yaml", out: Path = DEPLOY) -> list[Path]:
    topology = load_topology(topology_path)
    compose_path, script_path, acls_path = out / "compose.yaml", out / "postgres" / "init-tenants.sh", out / "kafka" / "acls.sh"
    compose_path.write_text(compose_text(topology), encoding="utf-8")
    for path, text in ((script_path, init_script(topology)), (acls_path, acl_script(topology))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755)
    return [compose_path, script_path, acls_path]


if __name__ == "__main__":
    for path in write(*(Path(a) for a in sys.argv[1:2])):
        print(f"wrote {path}")
