"""Seeding a running network: at the counters over HTTP (the demo population of
`make run`), and in bulk with COPY into every tier at once."""

from __future__ import annotations

import httpx
import psycopg
from typer.testing import CliRunner

from services.cli import app
from services.population import PopulationSpec, bulk_load
from tests.conftest import TenantDb, wait_until
from tests.e2e.helpers import copies_of, query

runner = CliRunner()


def test_seed_over_http_flows_to_the_national_server(network):
    national = TenantDb(network, "national")
    before = national.value("select count(*) from identity")
    result = runner.invoke(app, ["seed", "12", "--seed", "31337", "--data", str(network.root)])
    assert result.exit_code == 0, result.output
    assert "12 persons" in result.output
    wait_until(lambda: national.value("select count(*) from identity") >= before + 12, timeout=60, what="the seeded persons at national")


def test_bulk_load_writes_every_tier_consistently(network):
    def connect(database: str):
        cred = network.credentials[database]
        return psycopg.connect(host=network.postgres.host, port=network.postgres.port, user=cred.role, password=cred.password, dbname=cred.database)

    spec = PopulationSpec(seed=90210, municipalities=("131016", "272035"))
    national = TenantDb(network, "national")
    before = national.value("select count(*) from identity")
    assert bulk_load(connect, network.topology, spec, 400, batch=150) == 400
    # other tests' changes may still be arriving at the shared national server, hence at least
    assert national.value("select count(*) from identity") >= before + 400
    assert national.value("select count(*) from identity where payload like %s", ("%2026-10-01T09:00:00Z%",)) >= 400

    code, municipality = national.value("select resident_code || ',' || municipality_code from identity where payload like %s limit 1", ("%2026-10-01T09:00:00Z%",)).split(",")
    for database in copies_of(network, municipality):
        assert TenantDb(network, database).value("select version from identity where resident_code = %s", (code,)) == 1
    record = httpx.get(f"{network.url(f'municipal_rrs.{municipality}')}/v1/residents/{code}", auth=network.staff_auth(), timeout=10)
    assert record.status_code == 200 and record.json()["version"] == 1
    assert TenantDb(network, f"rrs_{municipality}").value("select count(*) from resident_history where resident_code = %s", (code,)) == 1
    # an agency finds the bulk-loaded person, and the next change flows on top of version 1
    found = query(network, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code, "reason": "受給資格の確認"})
    assert found.status_code == 200 and found.json()["persons"][0]["resident_code"] == code
    moved = httpx.post(f"{network.url(f'municipal_rrs.{municipality}')}/v1/residents/{code}/death", auth=network.staff_auth(), json={"death_date": "2026-10-02"}, timeout=10)
    assert moved.status_code == 200, moved.text
    wait_until(lambda: national.value("select version from identity where resident_code = %s", (code,)) == 2, timeout=60, what="the death at national")
