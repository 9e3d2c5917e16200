"""The services' connection pool on a real PostgreSQL: a pooled connection that
sat idle is checked before use, so one that PostgreSQL closed meanwhile (a
restart, an administrator, a network cut) is replaced without the caller
seeing an error; one that was in use a moment ago goes out unchecked."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from services.common import db
from tests.e2e.helpers import tenant_database


async def _scenario(url: str, admin) -> dict:
    engine = db.make_engine(url, pool_size=1, max_overflow=0)
    seen: dict = {}
    try:
        async with engine.connect() as conn:
            first_backend = (await conn.execute(text("select pg_backend_pid()"))).scalar_one()

        # used a moment ago: handed out again without a ping, the same backend answers
        async with engine.connect() as conn:
            seen["busy reuse keeps the backend"] = (await conn.execute(text("select pg_backend_pid()"))).scalar_one() == first_backend

        # PostgreSQL ends the pooled connection while it sits idle in the pool
        admin.execute("select pg_terminate_backend(%s)", (first_backend,))
        await asyncio.sleep(db.PING_AFTER_IDLE_SECONDS + 0.5)
        async with engine.connect() as conn:
            seen["after idle, a fresh backend"] = (await conn.execute(text("select pg_backend_pid()"))).scalar_one() != first_backend
    finally:
        await engine.dispose()
    return seen


def test_an_idle_pooled_connection_closed_by_the_server_is_replaced_before_use(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.5)
    with tenant_database(tmp_path, "pool_test") as (postgres, url), postgres.admin_connect() as admin:
        admin.autocommit = True
        seen = asyncio.run(_scenario(url, admin))
    assert seen == {"busy reuse keeps the backend": True, "after idle, a fresh backend": True}
