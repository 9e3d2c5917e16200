"""The docker compose deployment: generated from the topology (so it cannot drift
from the local run), valid against the compose-spec schema, and a Dockerfile
that hadolint accepts; Kafka takes mutual-TLS clients only, every node that
talks to it has a principal and a certificate, and the ACLs follow the rules of
docs/security-broker.md. No Docker engine is needed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from services.common.embedded import TenantCredentials
from services.common.settings import ServiceSettings
from services.common.topology import load_topology
from contracts import topics
from services.deploy_compose import DEPLOY, LOCAL_ONLY, REPO_ROOT, compose_text, init_script, service_name
from services.deploy_kafka import Acl, acl_script, make_tls, parse_acl_script
from services.network import Network

TOPOLOGY = load_topology(DEPLOY / "topology.yaml")
VENV_BIN = Path(sys.executable).parent


def checked_in() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_checked_in_files_are_what_the_generator_makes():
    assert (DEPLOY / "compose.yaml").read_text(encoding="utf-8") == compose_text(TOPOLOGY), "run: python -m services.deploy_compose"
    assert (DEPLOY / "postgres" / "init-tenants.sh").read_text(encoding="utf-8") == init_script(TOPOLOGY), "run: python -m services.deploy_compose"
    assert (DEPLOY / "kafka" / "acls.sh").read_text(encoding="utf-8") == acl_script(TOPOLOGY), "run: python -m services.deploy_compose"


def test_compose_file_is_valid_against_the_compose_spec_schema():
    result = subprocess.run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_compose_file_is_refused_by_the_validator(tmp_path):
    broken = checked_in()
    broken["services"]["postgres"]["healthcheck"]["retries"] = "many"
    broken["services"]["kafka"]["no-such-key"] = True
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True)
    assert result.returncode != 0


def test_dockerfile_passes_hadolint():
    result = subprocess.run([str(VENV_BIN / "hadolint"), "--no-color", str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_node_gets_the_variables_the_local_run_sets_and_nothing_unknown(tmp_path):
    services = checked_in()["services"]
    net = Network(root=tmp_path)
    settings_fields = {f"JUKINET_{name.upper()}" for name in ServiceSettings.model_fields}
    for node in TOPOLOGY.nodes:
        net.credentials[node.database] = TenantCredentials(database=node.database, role=node.database, password="x")
        local = {k for k in net.node_env(node.id) if k.startswith("JUKINET_")}
        env = services[service_name(node)]["environment"]
        assert local - LOCAL_ONLY <= set(env), f"{node.id}: compose lacks {sorted(local - LOCAL_ONLY - set(env))}"
        assert set(env) <= settings_fields, f"{node.id}: unknown {sorted(set(env) - settings_fields)}"
        assert env["JUKINET_SERVICE"] == node.kind and env["JUKINET_TENANT"] == node.tenant
        # the tenant's own database and role, named as in the embedded run
        url = env["JUKINET_DATABASE_URL"]
        assert url.startswith(f"postgresql+psycopg://{node.database}:") and url.endswith(f"@postgres:5432/{node.database}")
        # only its own private key is mounted
        private = [v for v in services[service_name(node)]["volumes"] if isinstance(v, dict) and v["target"].endswith("/private")]
        assert [v["volume"]["subpath"] for v in private] == [f"private/{node.party}"]


def test_variables_are_documented():
    documented = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for service in checked_in()["services"].values():
        for name in service.get("environment", {}):
            if name.startswith("JUKINET_") and not name.startswith("JUKINET_DBPW_"):
                assert f"`{name}`" in documented, name


def test_postgres_creates_one_database_and_role_per_tenant():
    script = init_script(TOPOLOGY)
    for node in TOPOLOGY.nodes:
        assert f"tenant {node.database} " in script
    assert "revoke all on database" in script
    assert checked_in()["services"]["postgres"]["environment"]["POSTGRES_INITDB_ARGS"].startswith("--auth-host=scram-sha-256")


def test_deploy_keys_give_each_agency_an_encryption_key_the_national_server_reads(tmp_path):
    """Push notifications are sealed to the agency's X25519 key (docs/push.md): its public key lands in the volume's
    ``public`` directory, which the national server mounts as ``JUKINET_KEYS_DIR``; its private key stays in the agency's
    own ``private/agency-<id>`` directory, which no node mounts."""
    from services.cli import deploy_keys
    from services.common.encryption_keys import EncryptionKeyRing, load_encryption_private_key
    from services.deploy_compose import KEYS_MOUNT
    from contracts.push_encryption import key_id

    deploy_keys(out=tmp_path, topology=DEPLOY / "topology.yaml")
    national = next(n for n in TOPOLOGY.nodes if n.kind == "national_server")
    services = checked_in()["services"]
    assert services[service_name(national)]["environment"]["JUKINET_KEYS_DIR"] == f"{KEYS_MOUNT}/public"
    mounted = {v["volume"]["subpath"] for s in services.values() for v in s.get("volumes", []) if isinstance(v, dict)}
    ring = EncryptionKeyRing(tmp_path / "public")
    for agency in TOPOLOGY.agencies:
        party = f"agency-{agency.id}"
        private = load_encryption_private_key(tmp_path / "private" / party / f"{party}.x25519.key")
        assert key_id(ring.key_for(party)) == key_id(private.public_key())
        assert f"private/{party}" not in mounted


# --- Kafka: mutual TLS and ACLs (docs/security-broker.md) --------------------------------------------

KAFKA_KINDS = {"cs_gateway", "prefecture_server", "national_server", "provision_log"}


def expected_acls(topology) -> set[Acl]:
    """The rules, written out again here from the topology (not taken from the generator)."""
    want: set[Acl] = set()

    def node_may(principal: str, writes: list[str], reads: list[str]) -> None:
        want.update(Acl(principal, op, t) for t in writes for op in ("Write", "Create"))
        want.update(Acl(principal, op, t) for t in reads for op in ("Read", "Create"))

    tier = topology.network.prefecture_tier
    for m in topology.municipalities:
        upward = f"jukinet.pref.{m.prefecture}.identity" if tier else "jukinet.national.identity"
        others = [f"jukinet.cs.{o.code}.inbox" for o in topology.municipalities if o.code != m.code]
        node_may(f"cs-{m.code}", [upward, *others, "jukinet.provisions", "jukinet.deadletter"], [f"jukinet.cs.{m.code}.inbox"])
    if tier:
        for p in topology.prefectures:
            node_may(f"pref-{p.code}", ["jukinet.national.identity", "jukinet.provisions", "jukinet.deadletter"], [f"jukinet.pref.{p.code}.identity"])
    node_may("national", [*(f"jukinet.push.{a.id}" for a in topology.agencies), "jukinet.provisions", "jukinet.deadletter"], ["jukinet.national.identity"])
    node_may("provision-log", ["jukinet.deadletter"], ["jukinet.provisions"])
    want.update(Acl(f"agency-{a.id}", "Read", f"jukinet.push.{a.id}") for a in topology.agencies)
    return want


@pytest.mark.parametrize("topology_file", ["topology.yaml", "topology-without-prefectures.yaml"])
def test_acls_let_each_node_write_only_its_topics_and_read_only_its_input(topology_file):
    topology = load_topology(DEPLOY / topology_file)
    made, granted = parse_acl_script(acl_script(topology))
    assert set(granted) == expected_acls(topology)
    assert len(granted) == len(set(granted))
    # every topic an ACL names is created by the script, with the names of contracts/topics.py
    assert {a.topic for a in granted} == set(made)
    assert topics.NATIONAL_IDENTITY in made and topics.cs_inbox(topology.municipalities[0].code) in made
    # each agency reads its push topic and nothing else; nobody else reads a push topic
    for agency in topology.agencies:
        assert [a for a in granted if a.principal == f"agency-{agency.id}"] == [Acl(f"agency-{agency.id}", "Read", topics.agency_push(agency.id))]
    assert {a.principal for a in granted if a.operation == "Read" and a.topic.startswith("jukinet.push.")} == {f"agency-{a.id}" for a in topology.agencies}
    # each inbox is read by its own CS only
    for m in topology.municipalities:
        assert {a.principal for a in granted if a.operation == "Read" and a.topic == topics.cs_inbox(m.code)} == {f"cs-{m.code}"}
    # the ACLs are literal grants: no wildcard, no prefix
    script = acl_script(topology)
    assert "--resource-pattern-type literal" in script and "*" not in " ".join(a.topic for a in granted)


def test_every_node_that_talks_to_kafka_has_a_principal_and_a_certificate(tmp_path):
    services = checked_in()["services"]
    make_tls(tmp_path, TOPOLOGY)
    ca = x509.load_pem_x509_certificate((tmp_path / "public" / "kafka-ca.pem").read_bytes())
    _, granted = parse_acl_script((DEPLOY / "kafka" / "acls.sh").read_text(encoding="utf-8"))
    principals = []
    for node in TOPOLOGY.nodes:
        env = services[service_name(node)]["environment"]
        if node.kind not in KAFKA_KINDS:
            assert "JUKINET_KAFKA_SECURITY_PROTOCOL" not in env and node.party not in {a.principal for a in granted}
            continue
        principals.append(node.party)
        assert env["JUKINET_KAFKA_SECURITY_PROTOCOL"] == "SSL"
        assert env["JUKINET_KAFKA_CA_FILE"] == "/run/jukinet/public/kafka-ca.pem"
        # the certificate and key are in the node's own private directory, the only one it mounts
        assert env["JUKINET_KAFKA_CERT_FILE"] == "/run/jukinet/private/kafka.crt" and env["JUKINET_KAFKA_KEY_FILE"] == "/run/jukinet/private/kafka.key"
        cert = x509.load_pem_x509_certificate((tmp_path / "private" / node.party / "kafka.crt").read_bytes())
        assert cert.subject.rfc4514_string() == f"CN={node.party}" and cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        assert (tmp_path / "private" / node.party / "kafka.key").stat().st_mode & 0o077 == 0
        assert any(a.principal == node.party for a in granted), f"{node.id} has no ACL"
        assert "kafka-acls" in services[service_name(node)]["depends_on"]
    assert len(principals) == len(set(principals))
    for agency in TOPOLOGY.agencies:
        assert (tmp_path / "private" / f"agency-{agency.id}" / "kafka.crt").exists()
    # a second run keeps every certificate
    assert make_tls(tmp_path, TOPOLOGY) == []


def test_kafka_takes_mutual_tls_clients_only_and_authorizes_them():
    services = checked_in()["services"]
    env = services["kafka"]["environment"]
    listeners = dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners.values()) == {"SSL"}
    assert {name.split("://")[0] for name in env["KAFKA_LISTENERS"].split(",")} <= set(listeners)
    assert env["KAFKA_SSL_CLIENT_AUTH"] == "required"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:kafka;User:kafka-admin"
    assert "CONTROLLER://localhost:" in env["KAFKA_LISTENERS"]  # the controller is not reachable from other containers
    # the principal is the certificate's CN ($$ is compose's escape of $)
    rule = env["KAFKA_SSL_PRINCIPAL_MAPPING_RULES"].replace("$$", "$")
    pattern, replacement = re.fullmatch(r"RULE:(.*)/(.*)/,DEFAULT", rule).groups()
    assert re.sub(pattern, replacement.replace("$1", r"\1"), "CN=cs-131016") == "cs-131016"
    assert re.fullmatch(pattern, "CN=cs-131016,O=other") is None
    # each broker-side container mounts only its own key directory
    subpaths = lambda name: [v["volume"]["subpath"] for v in services[name]["volumes"] if isinstance(v, dict) and v["source"] == "keys"]
    assert subpaths("kafka") == ["private/kafka"] and subpaths("kafka-acls") == ["private/kafka-admin"]
    assert "--command-config" in services["kafka"]["healthcheck"]["test"][1]


def test_postgres_closes_the_shared_databases_to_tenant_roles():
    """PostgreSQL lets PUBLIC connect to ``postgres`` and ``template1`` and make temporary tables there; the init closes both."""
    script = init_script(TOPOLOGY)
    for shared in ("postgres", "template1"):
        assert f"revoke all on database {shared} from public;" in script
    assert script.index("revoke all on database template1") < script.index("tenant() {"), "closed before any tenant role exists"
