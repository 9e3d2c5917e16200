"""Operating the network: readiness, Prometheus metrics that move with what
happens, and the operator CLI (status, resync, replay, trace) against the
running network."""

from __future__ import annotations

from datetime import date

import httpx
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from contracts import topics
from services.cli import app
from tests.conftest import TenantDb, wait_until
from tests.e2e.helpers import address_in, below_national, national_forgets_versions_after_first, prefecture_node, produce, query, register, unique_reason, upstream_party

NATIONAL = "national_server.national"
runner = CliRunner()


def scrape(network, node_id: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{network.url(node_id)}/metrics", timeout=10)
    assert response.status_code == 200
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, lbls), v in samples.items() if n == name and labels.items() <= dict(lbls).items())


def national_version(network, code: str):
    return TenantDb(network, "national").value("select version from identity where resident_code = %s", (code,))


def test_ready_checks_database_and_broker(network):
    for node_id in (NATIONAL, "municipal_rrs.131016", "cs_gateway.131016"):
        response = httpx.get(f"{network.url(node_id)}/ready", timeout=10)
        assert response.status_code == 200, response.text
        checks = response.json()["checks"]
        assert checks["database"] is True
        assert ("broker" in checks) is (not node_id.startswith("municipal_rrs")), checks  # the RRS never talks to the broker


def test_metrics_follow_provisions_refusals_dead_letters_and_requests(network):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: national_version(network, code) == 1, what="the birth at national")
    before = scrape(network, NATIONAL)

    found = query(network, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code, "reason": unique_reason()})
    assert found.status_code == 200
    refused = query(network, "pension-service", {"type": "ByResidentCode", "affair": "passport-issuance", "resident_code": code, "reason": unique_reason()})
    assert refused.status_code == 403
    produce(network, topics.NATIONAL_IDENTITY, key=code, value=b'{"kind": "identity-change/v1", "municipality_code": "131016", "not": "a change"}',
            signed_as=upstream_party(network, "131016"), kind="identity-change")

    def moved():
        after = scrape(network, NATIONAL)
        return (
            value(after, "jukinet_provisions_total", affair="pension-benefits") == value(before, "jukinet_provisions_total", affair="pension-benefits") + 1
            and value(after, "jukinet_refusals_total", channel="http", reason="affair-not-authorised") == value(before, "jukinet_refusals_total", channel="http", reason="affair-not-authorised") + 1
            and value(after, "jukinet_refusals_total", channel="kafka", reason="invalid-contract") >= value(before, "jukinet_refusals_total", channel="kafka", reason="invalid-contract") + 1
            and after
        )

    after = wait_until(moved, timeout=60, what="provision, refusal and dead-letter counters to move")
    # request latencies from the FastAPI instrumentation, whatever semantic-convention name it uses
    assert any(name.startswith("http_server") and name.endswith("_count") and v >= 1 for (name, _), v in after.items()), sorted({n for n, _ in after})
    # the consumer of the national topic reports its lag per partition, and the outbox its backlog
    lag = {dict(lbls)["partition"] for (name, lbls), _ in after.items() if name == "jukinet_consumer_lag" and dict(lbls)["topic"] == topics.NATIONAL_IDENTITY}
    assert lag, "no consumer lag series"
    assert any(name == "jukinet_outbox_backlog" for name, _ in after)


def test_outbox_backlog_counts_undelivered_rows(network):
    """The RRS relay cannot reach a stopped CS: its backlog grows, then drains when the CS is back."""
    rrs = "municipal_rrs.131130"
    network.stop_node("cs_gateway.131130")
    try:
        register(network, "131130")
        wait_until(lambda: value(scrape(network, rrs), "jukinet_outbox_backlog") >= 1, timeout=30, what="a backlog at the RRS")
    finally:
        network.start_node("cs_gateway.131130")
    wait_until(lambda: value(scrape(network, rrs), "jukinet_outbox_backlog") == 0, timeout=60, what="the backlog to drain")


def test_status_shows_every_node_up(network):
    result = runner.invoke(app, ["status", "--data", str(network.root), "--json"])
    assert result.exit_code == 0, result.output
    import json

    states = json.loads(result.output)
    assert set(states) == set(network.nodes)
    assert all(s["up"] and s["ready"] for s in states.values()), states
    assert "lag" in states[NATIONAL] and "backlog" in states["cs_gateway.131016"]
    table = runner.invoke(app, ["status", "--data", str(network.root)])
    assert table.exit_code == 0 and "status" in table.output and "n/a" in table.output  # the provision log takes no snapshot


def _moved_person(network) -> tuple[str, str]:
    person = register(network, "272035")
    code = person["resident_code"]
    moved = httpx.post(f"{network.url('municipal_rrs.272035')}/v1/residents/{code}/move-within", auth=network.staff_auth(), json={"new_address": address_in("272035"), "move_date": date.today().isoformat()}, timeout=10)
    assert moved.status_code == 200
    wait_until(lambda: national_version(network, code) == 2, what="the move at national")
    return code, moved.json()["address"]["text"]


def test_resync_fetches_what_a_restored_national_server_lacks(network):
    code, address = _moved_person(network)
    national_forgets_versions_after_first(network, code)  # as after restoring an old backup: no gap is visible
    assert national_version(network, code) == 1
    result = runner.invoke(app, ["resync", code, "--node", NATIONAL, "--data", str(network.root)])
    assert result.exit_code == 0, result.output
    assert national_version(network, code) == 2
    assert TenantDb(network, "national").value("select address_text from identity where resident_code = %s", (code,)) == address
    refused = runner.invoke(app, ["resync", code, "--node", "cs_gateway.272035", "--data", str(network.root)])
    assert refused.exit_code == 1 and "cannot-resync" in refused.output  # nothing calls into the RRS


def test_replay_delivers_outbox_rows_again(network):
    code, _ = _moved_person(network)
    sender = below_national(network, "272035")  # the node whose outbox sends to the national server
    outbox = TenantDb(network, network.nodes[sender].node.database)
    row_id = wait_until(lambda: outbox.value("select max(id) from outbox where key = %s and sent_at is not null", (code,)), what="the forwarded move")
    national_forgets_versions_after_first(network, code)
    result = runner.invoke(app, ["replay", "--node", sender, "--from-id", str(row_id), "--to-id", str(row_id), "--data", str(network.root)])
    assert result.exit_code == 0, result.output
    assert '"replayed": 1' in result.output
    wait_until(lambda: national_version(network, code) == 2, timeout=60, what="the replayed move at national")
    unsigned = httpx.post(f"{network.url(sender)}/internal/v1/operator/outbox/replay", params={"from_id": row_id, "to_id": row_id}, timeout=10)
    assert unsigned.status_code == 401


def test_trace_follows_a_birth_through_every_tier(network):
    person = register(network, "131016")
    code = person["resident_code"]
    wait_until(lambda: national_version(network, code) == 1, what="the birth at national")
    traceparent = TenantDb(network, "national").value("select traceparent from identity where resident_code = %s", (code,))
    trace_id = traceparent.split("-")[1]
    wanted = ("municipal_rrs.131016", "cs_gateway.131016", prefecture_node(network, "13").id, NATIONAL)

    def complete():
        result = runner.invoke(app, ["trace", trace_id, "--data", str(network.root)])
        return result if result.exit_code == 0 and all(node in result.output for node in wanted) else None

    result = wait_until(complete, timeout=30, what="spans of every tier in the trace files")
    assert trace_id in result.output
    missing = runner.invoke(app, ["trace", "0" * 32, "--data", str(network.root)])
    assert missing.exit_code == 1
