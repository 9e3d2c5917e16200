"""Database engine, sessions and migrations for one tenant's database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5) -> AsyncEngine:
    """The service's engine on asyncpg, whatever driver ``url`` names.

    The settings carry one URL (``postgresql+psycopg://…``) for the service and
    for Alembic, which runs synchronously on psycopg. Requests and loops use
    asyncpg: psycopg's asyncio mode registers and unregisters the socket with
    the event loop around every wait, which under load cost the services a
    large share of their CPU (docs/benchmarks.md, docs/architecture.md).
    """
    return create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"), pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def run_migrations(service_dir: Path, url: str) -> None:
    """Upgrade this tenant's database to the service's newest Alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(service_dir / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
