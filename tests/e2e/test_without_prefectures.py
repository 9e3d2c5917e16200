"""The network without prefecture servers (R-NET-4): CSs send to the national
server directly, and a gap there is healed from the CS."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from services.network import REPO_ROOT
from tests.conftest import TenantDb, running_network, wait_until
from tests.e2e.helpers import address_in, national_forgets_versions_after_first, query, redeliver_to_national, register


@pytest.fixture(scope="module")
def flat_network(tmp_path_factory):
    with running_network(tmp_path_factory.mktemp("flat"), REPO_ROOT / "deploy" / "topology-without-prefectures.yaml") as net:
        yield net


def test_changes_reach_the_national_server_without_the_prefecture_tier(flat_network):
    net = flat_network
    assert not any(node.startswith("prefecture_server") for node in net.nodes)
    assert "pref_13" not in net.credentials
    national = TenantDb(net, "national")
    person = register(net, "272035")
    code = person["resident_code"]
    wait_until(lambda: national.value("select version from identity where resident_code = %s", (code,)) == 1, what="birth at national")
    found = query(net, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code})
    assert found.status_code == 200 and found.json()["persons"][0]["resident_code"] == code

    # a lost version is fetched from the CS, the tier directly below
    rrs = net.url("municipal_rrs.272035")
    for _ in range(2):
        assert httpx.post(f"{rrs}/v1/residents/{code}/move-within", json={"new_address": address_in("272035"), "move_date": date.today().isoformat()}).status_code == 200
    wait_until(lambda: national.value("select version from identity where resident_code = %s", (code,)) == 3, what="version 3 at national")
    latest = national.value("select payload from identity_history where resident_code = %s and version = 3", (code,))
    national_forgets_versions_after_first(net, code)
    redeliver_to_national(net, code, latest)
    wait_until(lambda: national.value("select version from identity where resident_code = %s", (code,)) == 3, timeout=60, what="national healed from the CS")
    assert "cs_gateway.272035" in national.value("select healed_by from version_gaps where resident_code = %s order by id desc limit 1", (code,))
