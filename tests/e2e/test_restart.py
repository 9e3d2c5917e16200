"""Data survives a restart of the whole network, and a broker that comes back
empty loses nothing: the databases hold the truth."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from services.network import Network
from tests.conftest import TenantDb, running_network, wait_until
from tests.e2e.helpers import address_in, query, register


@pytest.fixture(scope="module")
def own_network(tmp_path_factory):
    with running_network(tmp_path_factory.mktemp("restart")) as net:
        yield net


def _national_version(net: Network, code: str):
    return TenantDb(net, "national").value("select version from identity where resident_code = %s", (code,))


def test_data_survives_a_full_restart_and_an_empty_broker(own_network):
    net = own_network
    before = register(net, "131016")
    code = before["resident_code"]
    wait_until(lambda: _national_version(net, code) == 1, what="birth at national")

    net.stop()  # everything: nodes, broker (memory only), PostgreSQL
    net.start()
    assert httpx.get(f"{net.url('municipal_rrs.131016')}/v1/residents/{code}", auth=net.staff_auth()).json()["name"] == before["name"]
    assert _national_version(net, code) == 1

    # the broker restarted empty; new changes still flow end to end
    moved = httpx.post(f"{net.url('municipal_rrs.131016')}/v1/residents/{code}/move-within", auth=net.staff_auth(), json={"new_address": address_in("131016"), "move_date": date.today().isoformat()})
    assert moved.status_code == 200
    wait_until(lambda: _national_version(net, code) == 2, timeout=60, what="the move at national after the restart")

    # kill only the broker, start it empty while the services keep running
    net.broker.stop(kill=True)
    net.start_broker()
    newcomer = register(net, "272035")
    wait_until(lambda: _national_version(net, newcomer["resident_code"]) == 1, timeout=90, what="a birth after the broker came back empty")
    found = query(net, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code})
    assert found.status_code == 200 and found.json()["persons"][0]["address"]["text"] == moved.json()["address"]["text"]
