"""The docker compose deployment: generated from the topology (so it cannot drift
from the local run), valid against the compose-spec schema, and a Dockerfile
that hadolint accepts. No Docker engine is needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from services.common.embedded import TenantCredentials
from services.common.settings import ServiceSettings
from services.common.topology import load_topology
from services.deploy_compose import DEPLOY, LOCAL_ONLY, REPO_ROOT, compose_text, init_script, service_name
from services.network import Network

TOPOLOGY = load_topology(DEPLOY / "topology.yaml")
VENV_BIN = Path(sys.executable).parent


def checked_in() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_checked_in_files_are_what_the_generator_makes():
    assert (DEPLOY / "compose.yaml").read_text(encoding="utf-8") == compose_text(TOPOLOGY), "run: python -m services.deploy_compose"
    assert (DEPLOY / "postgres" / "init-tenants.sh").read_text(encoding="utf-8") == init_script(TOPOLOGY), "run: python -m services.deploy_compose"


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


def test_postgres_closes_the_shared_databases_to_tenant_roles():
    """PostgreSQL lets PUBLIC connect to ``postgres`` and ``template1`` and make temporary tables there; the init closes both."""
    script = init_script(TOPOLOGY)
    for shared in ("postgres", "template1"):
        assert f"revoke all on database {shared} from public;" in script
    assert script.index("revoke all on database template1") < script.index("tenant() {"), "closed before any tenant role exists"
