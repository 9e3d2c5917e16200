"""Database engine, sessions and migrations for one tenant's database."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

#: A pooled connection that sat unused longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 2.0


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5) -> AsyncEngine:
    """The service's engine on asyncpg, whatever driver ``url`` names.

    The settings carry one URL (``postgresql+psycopg://…``) for the service and
    for Alembic, which runs synchronously on psycopg. Requests and loops use
    asyncpg: psycopg's asyncio mode registers and unregisters the socket with
    the event loop around every wait, which under load cost the services a
    large share of their CPU (docs/benchmarks.md, docs/architecture.md).
    """
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"), pool_size=pool_size, max_overflow=max_overflow)
    _ping_connections_that_sat_idle(engine)
    return engine


def _ping_connections_that_sat_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection is alive before use, unless it was in use a moment ago.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout; on asyncpg a ping is
    three round trips (BEGIN, an empty statement, ROLLBACK), which under load
    was as much again as the work of a short transaction. A connection that
    was returned less than ``PING_AFTER_IDLE_SECONDS`` ago was just working, so
    it goes out unchecked; one that sat idle (across a PostgreSQL restart, say)
    is pinged, and a dead one is replaced before the caller sees it. A restart
    in the middle of busy traffic still fails the transactions it cuts, as it
    would with any ping.
    """
    pool, dialect = engine.sync_engine.pool, engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _note_returned(_dbapi_connection, record) -> None:
        if record is not None:
            record.info["returned_at"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.DisconnectionError(f"pooled connection found dead: {error}") from error  # the pool replaces it
            raise


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def run_migrations(service_dir: Path, url: str) -> None:
    """Upgrade this tenant's database to the service's newest Alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(service_dir / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
