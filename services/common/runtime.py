"""Bootstrap of one service process: settings, tracing, database, broker, keys.

Every service's ``__main__`` calls :func:`serve` with its app factory; tests
start the same processes. Nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import BigInteger, DateTime, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from contracts.topics import HEADER_MESSAGE_KIND
from services.common.db import make_engine, make_sessionmaker, run_migrations
from services.common.kafka import Producer
from services.common.settings import ServiceSettings
from services.common.telemetry import instrument_engine, setup_tracing
from services.common.tokens import PublicKeyRing, load_private_key, sign_token

log = logging.getLogger(__name__)


class RefusalMixin:
    """Every refused HTTP request: who asked, what, and why it was refused."""

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    refused_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(400))
    caller: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text)


class Runtime:
    """The process-wide resources of one service, created once by the app factory."""

    def __init__(self, settings: ServiceSettings, *, with_producer: bool = True):
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        instrument_engine(self.engine)
        self.sessions = make_sessionmaker(self.engine)
        self.producer = Producer(settings.kafka_bootstrap) if with_producer else None
        self.keys = PublicKeyRing(settings.keys_dir)
        self._private_key = load_private_key(settings.private_key)
        self.party = settings.node.party
        self.http = httpx.AsyncClient(timeout=10.0)
        self._tasks: list[asyncio.Task] = []

    def token_for(self, audience: str, *, subject: str | None = None, lifetime_seconds: int = 300, claims: dict | None = None) -> str:
        return sign_token(self._private_key, issuer=self.party, audience=audience, subject=subject, lifetime_seconds=lifetime_seconds, claims=claims)

    async def publish_outbox_row(self, row) -> None:
        """Outbox delivery to Kafka: the row's destination is the topic, its key the record key."""
        assert self.producer is not None
        await self.producer.send(row.destination, key=row.key, value=row.payload.encode(), headers={HEADER_MESSAGE_KIND: row.kind})

    def refusal_recorder(self, refusal_model) -> Callable[[Request, str, str], Awaitable[None]]:
        async def record(request: Request, slug: str, detail: str) -> None:
            caller = getattr(request.state, "caller", None)
            async with self.sessions() as session, session.begin():
                session.add(refusal_model(method=request.method, path=str(request.url.path)[:400], caller=caller, reason=slug[:64], detail=detail[:8000]))

        return record

    def background(self, *coroutines: Callable[[], Awaitable[None]]):
        """A FastAPI lifespan that runs these loops for the life of the process."""

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI):
            if self.producer is not None:
                await self._start_producer()
            self._tasks = [asyncio.create_task(c()) for c in coroutines]
            try:
                yield
            finally:
                for t in self._tasks:
                    t.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                if self.producer is not None:
                    await self.producer.stop()
                await self.http.aclose()
                await self.engine.dispose()

        return lifespan

    async def _start_producer(self) -> None:
        assert self.producer is not None
        while True:
            try:
                await self.producer.start()
                return
            except Exception as exc:  # broker not up yet: wait for it rather than fail the service
                log.warning("broker unreachable (%s); retrying", exc)
                await asyncio.sleep(1.0)


def add_health(app: FastAPI, settings: ServiceSettings) -> None:
    @app.get("/health", include_in_schema=False)
    async def health() -> dict:
        return {"status": "ok", "node": settings.node.id}


def serve(build_app: Callable[[ServiceSettings], FastAPI], service_dir: Path) -> None:
    """Run one service: migrate its own database, then serve HTTP and its loops."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ServiceSettings()
    setup_tracing(settings.node.id, trace_file=settings.trace_file, otlp_endpoint=settings.otlp_endpoint)
    run_migrations(service_dir, settings.database_url)
    app = build_app(settings)
    add_health(app, settings)
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="health")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
