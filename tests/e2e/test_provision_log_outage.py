"""The provision log in special states, on a network of its own: the log and
the broker unreachable while an agency looks someone up, stored entries
altered or removed, and entries expired."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from services.common.db import make_sessionmaker
from services.network import Network
from services.provision_log import store
from tests.conftest import TenantDb, running_network, wait_until
from tests.e2e.test_provision_log import LOG, log_key, proof_of, provide, registered_at_national, resident_auth, verifier


@pytest.fixture(scope="module")
def own_network(tmp_path_factory):
    with running_network(tmp_path_factory.mktemp("provision-log")) as net:
        yield net


def test_a_provider_whose_log_is_unreachable_hands_out_nothing_unrecorded(own_network, tmp_path):
    net = own_network
    person = registered_at_national(net)
    code = person["resident_code"]
    national = TenantDb(net, "national")

    # the log and the path to it are down
    net.stop_node(LOG)
    net.broker.stop(kill=True)
    response = provide_raw(net, code)
    assert response.status_code == 200 and response.json()["persons"]
    (record_id,) = response.headers["x-provision-records"].split(",")
    # the data left only after its record was committed in the provider's own outbox, and it waits there
    pending = national.rows("select payload, sent_at from outbox where payload like %s", (f'%"{record_id}"%',))
    assert len(pending) == 1 and pending[0][1] is None
    assert json.loads(pending[0][0])["resident_code"] == code

    # the log comes back: the record reaches it and is provably in the tree
    net.start_broker()
    net.start_node(LOG)
    wait_until(lambda: national.value("select sent_at from outbox where payload like %s", (f'%"{record_id}"%',)) is not None, timeout=90, what="the outbox row delivered")
    auth = resident_auth(net, code, "131016")
    bundle = proof_of(net, auth, record_id, timeout=90)
    (tmp_path / "proof.json").write_text(json.dumps(bundle, ensure_ascii=False))
    ok = verifier("inclusion", tmp_path / "proof.json", "--key", log_key(net), "--resident-code", code)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def provide_raw(net: Network, code: str) -> httpx.Response:
    from tests.e2e.helpers import query, unique_reason

    return query(net, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code, "reason": unique_reason()})


def _audit(net: Network):
    return verifier("audit", "--url", net.url(LOG), "--key", log_key(net))


def test_altering_or_removing_a_stored_entry_is_detected(own_network, tmp_path):
    net = own_network
    person = registered_at_national(net)
    code = person["resident_code"]
    records = [provide(net, code) for _ in range(3)]
    auth = resident_auth(net, code, "131016")
    bundle = proof_of(net, auth, records[-1])
    assert _audit(net).returncode == 0
    log_db = TenantDb(net, "provlog")
    index, entry, leaf_hash = log_db.rows("select leaf_index, entry, leaf_hash from log_leaves where record_id = %s", (records[1],))[0]

    # altered entry: its hash no longer matches, and the resident's proof fails
    log_db.rows("update log_leaves set entry = replace(entry, 'pension-service', 'mofa-passport') where leaf_index = %s returning 1", (index,))
    altered = _audit(net)
    assert altered.returncode == 1 and f"leaf {index}" in altered.stdout and "altered" in altered.stdout
    tampered = proof_of(net, auth, records[1])
    (tmp_path / "tampered.json").write_text(json.dumps(tampered, ensure_ascii=False))
    assert verifier("inclusion", tmp_path / "tampered.json", "--key", log_key(net)).returncode == 1

    # altered entry with its hash recomputed: the signed root no longer matches
    log_db.rows("update log_leaves set leaf_hash = sha256('\\x00'::bytea || convert_to(entry, 'UTF8')) where leaf_index = %s returning 1", (index,))
    rehashed = _audit(net)
    assert rehashed.returncode == 1 and "recomputed root differs" in rehashed.stdout, rehashed.stdout

    # removed entry: a leaf is missing
    log_db.rows("update log_leaves set entry = %s, leaf_hash = %s where leaf_index = %s returning 1", (entry, leaf_hash, index))
    assert _audit(net).returncode == 0, "restored"
    saved = log_db.rows("select leaf_index, record_id, kind, leaf_hash, entry, resident_code, salt, entry_time from log_leaves where leaf_index = %s", (index,))[0]
    log_db.rows("delete from log_leaves where leaf_index = %s returning 1", (index,))
    removed = _audit(net)
    assert removed.returncode == 1 and f"leaf {index} is missing" in removed.stdout
    log_db.rows("insert into log_leaves (leaf_index, record_id, kind, leaf_hash, entry, resident_code, salt, entry_time) values (%s, %s, %s, %s, %s, %s, %s, %s) returning 1", saved)
    assert _audit(net).returncode == 0
    assert bundle["leaf_index"] > index


def test_expired_entries_lose_their_content_but_every_proof_still_verifies(own_network, tmp_path):
    net = own_network
    person = registered_at_national(net)
    code = person["resident_code"]
    old = provide(net, code)
    auth = resident_auth(net, code, "131016")
    proof_of(net, auth, old)

    async def expire_all() -> int:
        engine = create_async_engine(net.database_url(LOG))
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await store.expire(session, now=datetime(2100, 1, 1, tzinfo=UTC), years=7)
        finally:
            await engine.dispose()

    assert asyncio.run(expire_all()) > 0
    log_db = TenantDb(net, "provlog")
    assert log_db.value("select count(*) from log_leaves where kind <> 'erasure' and (entry is not null or salt is not null or resident_code is not null)") == 0
    assert log_db.value("select count(*) from provision_records") == 0
    assert httpx.get(f"{net.url(LOG)}/v1/me/log", headers=auth).json()["records"] == []
    # the erasure is itself a leaf, naming the erased leaves; once a checkpoint covers it the audit accepts them
    marker = log_db.value("select max(leaf_index) from log_leaves where kind = 'erasure'")
    wait_until(lambda: int(httpx.get(f"{net.url(LOG)}/v1/log/checkpoint").text.split("\n")[1]) > marker, timeout=30, what="a checkpoint covering the erasure leaf")
    audit = _audit(net)
    assert audit.returncode == 0, audit.stdout + audit.stderr  # the hashes alone still give the signed root

    # the log goes on: a new provision is appended after the expired ones and proves against a new checkpoint
    fresh = provide(net, code)
    bundle = proof_of(net, auth, fresh)
    assert bundle["leaf_index"] > 0
    (tmp_path / "proof.json").write_text(json.dumps(bundle, ensure_ascii=False))
    assert verifier("inclusion", tmp_path / "proof.json", "--key", log_key(net), "--resident-code", code).returncode == 0
    assert _audit(net).returncode == 0
