"""The provision log's Merkle store on a real PostgreSQL: appends taken together (one consumer
fetch) build exactly the tree that the same appends one at a time would, each record once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from services.common.db import make_engine, make_sessionmaker, run_migrations
from services.provision_log import merkle, store
from tests.e2e.helpers import tenant_database

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "provision_log"


def _one_at_a_time(entries: list[store.Entry]) -> dict:
    """Every node of the tree, appended leaf by leaf in memory: what the store must hold."""
    nodes: dict = {}
    for index, entry in enumerate(entries):
        for level, i, h in merkle.nodes_for_append(index, merkle.leaf_hash(entry.entry), merkle.getter(nodes)):
            nodes[(level, i)] = h
    return nodes


async def test_appends_taken_together_build_the_tree_of_appends_one_at_a_time(tmp_path):
    now = datetime.now(UTC)
    entries = [store.Entry(str(uuid.uuid4()), "provision", f"entry {i}".encode(), now, resident_code=None, salt=None) for i in range(40)]
    with tenant_database(tmp_path, "provlog_store") as (_, url):
        run_migrations(SERVICE_DIR, url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        try:
            start = 0
            for chunk in (entries[:1], entries[1:6], entries[6:19], entries[19:40]):  # sizes 1, 5, 13, 21: odd starts and partial subtrees
                async with sessions() as session, session.begin():
                    indices = await store.append_many(session, chunk + chunk[:1])  # one record twice in a fetch (a redelivery)
                assert indices == [*range(start, start + len(chunk)), start], "in order; the second copy gets the first one's leaf"
                start += len(chunk)
            async with sessions() as session, session.begin():
                assert await store.append_many(session, entries[3:8]) == [3, 4, 5, 6, 7], "records with a leaf keep it"
            async with sessions() as session:
                assert await store.tree_size(session) == 40
                stored = {(level, idx): bytes(h) for level, idx, h in (await session.execute(text("select level, idx, hash from log_nodes"))).all()}
                leaves = (await session.execute(text("select record_id from log_leaves order by leaf_index"))).scalars().all()
        finally:
            await engine.dispose()
    assert stored == _one_at_a_time(entries)
    assert leaves == [e.record_id for e in entries]


async def test_old_format_leaves_stay_verifiable_erasures_are_marked_and_damage_is_not_signed(tmp_path):
    """On a real PostgreSQL: a provision/v1 leaf (appended before migration 0003) is still served, verified under
    v1 rules and marked; a leaf erased before erasure leaves existed gets one at start; expiry appends its own;
    the audit accepts all that; and a tree with an altered node under signed leaves is not signed again."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    import pytest

    from contracts.affairs import AFFAIRS
    from contracts.identifiers import resident_code_check_digit
    from contracts.provision import ProvisionRecord
    from services.provision_log import domain
    from services.provision_log.models import ProvisionEntry
    from services.provision_log.verify import VerificationFailed, check_log

    key, origin = Ed25519PrivateKey.generate(), "test/provision-log"
    code = "111111111" + "0"
    code += resident_code_check_digit(code)
    affair = AFFAIRS["pension-benefits"]

    def record(at: datetime) -> ProvisionRecord:
        return ProvisionRecord(
            record_id=uuid.uuid4(), provided_at=at, provider="national", recipient="pension-service", recipient_name="日本年金機構",
            affair=affair.id, affair_name=affair.name, items=list(affair.items), resident_code=code, reason="確認", query_type="ByResidentCode",
        )

    now = datetime.now(UTC)
    old, new, gone = record(now), record(now), record(now)
    with tenant_database(tmp_path, "provlog_formats") as (_, url):
        run_migrations(SERVICE_DIR, url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)

        async def audit() -> None:
            async with sessions() as session:
                checkpoint = await store.latest_checkpoint(session)
                page = await store.leaves(session, 0, 1000)
            check_log(page.leaves, checkpoint.note, key.public_key(), origin=origin, stored=True)

        async def sign() -> None:
            async with sessions() as session, session.begin():
                await store.sign_checkpoint(session, key=key, origin=origin, now=datetime.now(UTC))

        try:
            async with sessions() as session, session.begin():
                salt = b"\x05" * 32
                session.add(ProvisionEntry(record_id=str(old.record_id), resident_code=code, provided_at=old.provided_at, provider=old.provider,
                                           recipient=old.recipient, affair=old.affair, payload=old.model_dump_json()))
                await store.append(session, record_id=str(old.record_id), kind="provision", entry=domain.provision_entry(old, salt, kind=domain.PROVISION_V1),
                                   entry_time=old.provided_at, resident_code=code, salt=salt)
                await store.append_provisions(session, [new, gone])
            await sign()
            async with sessions() as session:
                view = {str(r.record_id): r for r in await store.resident_view(session, code, key=key.public_key(), origin=origin, limit=10, now=datetime.now(UTC))}
            assert view[str(old.record_id)].verified and view[str(old.record_id)].leaf_format == "provision/v1" and "recipient_name" in view[str(old.record_id)].unbound_fields
            assert view[str(new.record_id)].verified and view[str(new.record_id)].leaf_format == "provision/v2" and not view[str(new.record_id)].unbound_fields
            await audit()

            # a leaf erased the old way (no marker): the audit refuses it until the start-up marks it
            async with sessions() as session, session.begin():
                await session.execute(text("update log_leaves set entry = null, salt = null, resident_code = null, expired_at = now() where record_id = :r"), {"r": str(gone.record_id)})
                await session.execute(text("delete from provision_records where record_id = :r"), {"r": str(gone.record_id)})
            with pytest.raises(VerificationFailed, match="no erasure leaf names it"):
                await audit()
            async with sessions() as session, session.begin():
                assert await store.mark_earlier_erasures(session, now=datetime.now(UTC), years=7) == 1
            async with sessions() as session, session.begin():
                assert await store.mark_earlier_erasures(session, now=datetime.now(UTC), years=7) == 0, "once"
            await sign()
            await audit()

            # expiry appends its own marker; erasure leaves are never erased
            async with sessions() as session, session.begin():
                assert await store.expire(session, now=datetime(2100, 1, 1, tzinfo=UTC), years=7) == 2, "the two not erased yet"
            await sign()
            await audit()
            async with sessions() as session:
                assert await store.resident_view(session, code, key=key.public_key(), origin=origin, limit=10, now=datetime.now(UTC)) == []
                assert (await session.execute(text("select count(*) from log_leaves where kind = 'erasure' and entry is not null"))).scalar() == 2

            # a node that the next root is made of altered (leaves 0–3): the next checkpoint is refused, not signed over the damage
            async with sessions() as session, session.begin():
                await session.execute(text("update log_nodes set hash = sha256(hash) where level = 2 and idx = 0"))
                await store.append_provisions(session, [record(datetime.now(UTC))])
            with pytest.raises(store.TreeDamaged):
                await sign()
        finally:
            await engine.dispose()
