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
