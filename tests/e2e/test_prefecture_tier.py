"""The prefecture tier is there exactly when the topology says so (R-NET-4).

Every other e2e test runs on both topologies (``JUKINET_TEST_TOPOLOGY``); this
one checks what differs: which processes and databases exist, and which topic
a CS sends to.
"""

from __future__ import annotations

from contracts import topics
from tests.conftest import wait_until
from tests.e2e.helpers import copies_of, has_prefecture_tier, read_topic, register


def test_nodes_databases_and_routes_follow_the_prefecture_tier_setting(network, db):
    tier = has_prefecture_tier(network)
    prefectures = [p.code for p in network.topology.prefectures]
    assert all((f"prefecture_server.{p}" in network.nodes) is tier for p in prefectures)
    assert all((f"pref_{p}" in network.credentials) is tier for p in prefectures)
    assert network.topology.upstream_of_cs("272035") == ("prefecture_server.27" if tier else "national_server.national")

    code = register(network, "272035")["resident_code"]
    for database in copies_of(network, "272035"):
        wait_until(lambda: db(database).value("select version from identity where resident_code = %s", (code,)) == 1, what=f"birth at {database}")
    # the CS published the birth on its prefecture's topic, or straight on the national one
    on_prefecture_topic = any(r.key == code.encode() for r in read_topic(network, topics.prefecture_identity("27")))
    assert on_prefecture_topic is tier
