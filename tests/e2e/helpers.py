"""Building blocks for end-to-end tests: residents with real addresses, agency calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from datetime import date, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from aiokafka import AIOKafkaProducer
from faker import Faker

from contracts import topics
from services.common.broker_security import broker_client_options
from services.common.embedded import EmbeddedPostgres, free_port
from services.common.message_signing import MessageSigner
from services.common.tokens import load_private_key
from services.common.gazetteer import neighborhoods
from services.common.topology import Node, load_topology
from services.network import Network
from tests.conftest import topology_under_test

_fake = Faker("ja_JP")


class Card:
    """A My Number card: two key pairs made on it, whose private halves never leave."""

    def __init__(self):
        self.signing = ec.generate_private_key(ec.SECP256R1())
        self.authentication = ec.generate_private_key(ec.SECP256R1())

    @staticmethod
    def public_pem(key) -> str:
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def keys(self) -> dict:
        return {"signing_public_key_pem": self.public_pem(self.signing), "authentication_public_key_pem": self.public_pem(self.authentication)}


def address_in(municipality_code: str, rng: random.Random | None = None) -> dict:
    rng = rng or random.Random()
    postal, text = rng.choice(neighborhoods(municipality_code[:5]))
    return {"municipality_code": municipality_code, "postal_code": postal, "text": f"{text}{rng.randint(1, 9)}-{rng.randint(1, 30)}"}


def birth_body(municipality_code: str, *, family_name: str | None = None, family_kana: str | None = None, born: date | None = None, household_id: str | None = None) -> dict:
    """A 出生届 with a synthetic name (and its reading) and a real address."""
    family, kana_family, _ = _fake.last_name_pair()
    given_name, kana_given, _ = _fake.first_name_pair()
    born = born or date.today() - timedelta(days=random.randint(0, 30))
    return {
        "reason": "birth",
        "name": {"family_name": family_name or family, "given_name": given_name, "family_name_kana": family_kana or kana_family, "given_name_kana": kana_given},
        "birth_date": born.isoformat(),
        "sex": random.choice(["male", "female"]),
        "address": address_in(municipality_code),
        "household": {"household_id": household_id, "relationship": "子"} if household_id else {"relationship": "世帯主"},
        "became_resident_on": born.isoformat(),
        "family_register": {"honseki": "東京都千代田区千代田1", "hittousha": family_name or family},
        "notified_date": date.today().isoformat(),
    }


def register(net: Network, municipality_code: str, body: dict | None = None) -> dict:
    response = httpx.post(f"{net.url(f'municipal_rrs.{municipality_code}')}/v1/residents", auth=net.staff_auth(), json=body or birth_body(municipality_code), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def has_prefecture_tier(net: Network) -> bool:
    return net.topology.network.prefecture_tier


#: for the few tests of something that exists only with prefecture servers (R-NET-4)
needs_prefecture_tier = pytest.mark.skipif(
    not load_topology(topology_under_test()).network.prefecture_tier,
    reason="only with the prefecture tier: JUKINET_TEST_TOPOLOGY names a topology without prefecture servers",
)


def prefecture_node(net: Network, prefecture: str) -> Node:
    """Which tier holds a prefecture's residents and serves its prefectural affairs: its prefecture
    server, or the national server without that tier (``.id``, ``.database``, ``.party``)."""
    return net.topology.prefecture_node(prefecture)


def below_national(net: Network, municipality: str) -> str:
    """The node the national server asks for a missing version of a person of this municipality."""
    return net.topology.upstream_of_cs(municipality) if has_prefecture_tier(net) else f"cs_gateway.{municipality}"


def copies_of(net: Network, municipality: str) -> list[str]:
    """Databases holding the 本人確認情報 of a person registered in the municipality: CS, prefecture (if any), national."""
    return list(dict.fromkeys([f"cs_{municipality}", prefecture_node(net, municipality[:2]).database, "national"]))


def query(net: Network, agency: str, body: dict, *, provider: str | None = None) -> httpx.Response:
    """``POST /v1/persons/query`` at the provider that serves the agency (or at ``provider``, e.g. to test a refusal)."""
    provider = provider or net.provider_for(agency)
    node = "national_server.national" if provider == "national" else f"prefecture_server.{provider.removeprefix('pref-')}"
    return httpx.post(f"{net.url(node)}/v1/persons/query", json=body, headers={"authorization": f"Bearer {net.agency_token(agency, audience=provider)}"}, timeout=10)


def unique_reason() -> str:
    return f"確認{uuid.uuid4().hex[:8]}"


def national_forgets_versions_after_first(net: Network, resident_code: str) -> None:
    """Roll the national server back to version 1 of a person, as after restoring an old backup."""
    net.stop_node("national_server.national")
    with net.postgres.admin_connect("national") as admin:
        first = admin.execute("select payload from identity_history where resident_code = %s and version = 1", (resident_code,)).fetchone()[0]
        admin.execute("delete from identity_history where resident_code = %s and version > 1", (resident_code,))
        admin.execute("update identity set version = 1, payload = %s where resident_code = %s", (first, resident_code))
    net.start_node("national_server.national")


def produce(net: Network, topic: str, *, key: str, value: bytes, signed_as: str | None = None, kind: str = "", headers: list[tuple[str, bytes]] | None = None,
            key_file=None) -> None:
    """Put one raw record on a topic, as any process that reaches the broker could; ``signed_as`` signs it
    in that party's name, with its key as the node itself would (services/common/message_signing.py) or with
    ``key_file`` (a key that is not the party's); ``headers`` are sent as given."""
    sent = list(headers or [])
    if headers is None:
        sent = [(topics.HEADER_MESSAGE_KIND, kind.encode())] if kind else []
        if signed_as is not None:
            signer = MessageSigner(load_private_key(key_file or net.private_keys / f"{signed_as}.key"), signed_as)
            sent += [(name, v.encode()) for name, v in signer.headers(topic=topic, key=key.encode(), kind=kind, value=value).items()]

    async def send():
        producer = AIOKafkaProducer(bootstrap_servers=net.broker.bootstrap, enable_idempotence=False, **broker_client_options())
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key.encode(), headers=sent)
        finally:
            await producer.stop()

    asyncio.run(send())


def upstream_party(net: Network, municipality: str) -> str:
    """The node that produces a municipality's changes to the national server: its prefecture server, or its CS."""
    return f"pref-{municipality[:2]}" if has_prefecture_tier(net) else f"cs-{municipality}"


def redeliver_to_national(net: Network, resident_code: str, payload: str, *, municipality: str) -> None:
    """A change delivered again by the node that sent it (a redelivery, not a replay: a fresh record)."""
    produce(net, topics.NATIONAL_IDENTITY, key=resident_code, value=payload.encode(), signed_as=upstream_party(net, municipality), kind="identity-change")


def read_topic(net: Network, topic: str, *, idle_ms: int = 1500) -> list:
    """Every record currently on a topic, from the beginning (as an agency's consumer would read it)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read():
        consumer = AIOKafkaConsumer(bootstrap_servers=net.broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", group_id=None, **broker_client_options())
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer.topics()  # refreshes the metadata
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out = []
            while True:
                batch = await consumer.getmany(timeout_ms=idle_ms)
                if not batch:
                    return out
                for records in batch.values():
                    out.extend(records)
        finally:
            await consumer.stop()

    return asyncio.run(read())


def trace_spans(net: Network, node_id: str) -> list[dict]:
    """The spans one node has written to its trace file so far."""
    path = net.trace_file(node_id)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def agency_call(net: Network, agency: str, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"authorization": f"Bearer {net.agency_token(agency)}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{net.url('national_server.national')}{path}", headers=headers, timeout=10, **kwargs)


@contextlib.contextmanager
def tenant_database(tmp_path, tenant: str):
    """A PostgreSQL of its own with one tenant database, for tests of a mechanism without the network: (server, URL)."""
    postgres = EmbeddedPostgres(tmp_path / "postgres", free_port())
    postgres.start()
    try:
        credentials = postgres.ensure_tenant(tenant)
        yield postgres, credentials.url(postgres.host, postgres.port)
    finally:
        postgres.stop()
