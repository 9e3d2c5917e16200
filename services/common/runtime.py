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

from contracts.base import BIGINT_MAX
from contracts.topics import HEADER_MESSAGE_KIND
from services.common.db import make_engine, make_sessionmaker, run_migrations
from services.common.entitlement import check_entitled
from services.common.idempotency import not_a_change
from services.common.kafka import Producer
from services.common.message_signing import MessageSigner, RecordGate
from services.common.outbox import OutboxRelay
from services.common.safe_text import escaped
from services.common.settings import ServiceSettings
from services.common.telemetry import instrument_engine, setup_tracing
from services.common.tokens import PublicKeyRing, TokenCache, load_private_key

log = logging.getLogger(__name__)

#: Set when the process is told to stop. Requests that wait (long polls) end at once
#: instead of holding up uvicorn's graceful shutdown, which waits for every open request.
STOPPING = asyncio.Event()


async def wait_until(event: asyncio.Event, seconds: float) -> None:
    """Return when ``event`` is set, the process is stopping, or ``seconds`` passed, whichever comes first."""
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(STOPPING.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def http_client(settings: ServiceSettings, *, max_connections: int = 100, timeout: float = 10.0) -> httpx.AsyncClient:
    """This node's HTTP client to its peers: a pooled connection idle longer than
    ``http_client_keepalive_seconds`` is not reused, well before the peer's server closes it
    (``http_keep_alive_seconds``, see :func:`server_config`)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=min(20, max_connections),
                          keepalive_expiry=settings.http_client_keepalive_seconds)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


def server_config(app, settings: ServiceSettings, **options) -> uvicorn.Config:
    """uvicorn's configuration of a service.

    ``timeout_keep_alive``: uvicorn closes a connection idle for 5 s by default, the very
    moment httpx's pool (and many others) still reuses one (``keepalive_expiry`` 5 s). A
    client that sent its request on a connection idle for just under 5 s found it closed
    under it: "Server disconnected without sending a response", and for a POST no way to
    know whether it was carried out. Under load the server's loop runs late, so the window
    grows from a moment to the length of the queue. The server now keeps idle connections
    far longer than any client's pool keeps them (75 s against httpx's 5 s, our own
    clients' 30 s), so it is always the client that drops an idle connection, never a
    request in flight that is cut (docs/configuration.md).
    """
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                          timeout_keep_alive=max(1, round(settings.http_keep_alive_seconds)), **options)


class _Server(uvicorn.Server):
    def handle_exit(self, sig, frame) -> None:
        with contextlib.suppress(RuntimeError):  # no loop running yet: nothing waits
            asyncio.get_running_loop().call_soon_threadsafe(STOPPING.set)
        super().handle_exit(sig, frame)


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

    def __init__(self, settings: ServiceSettings, *, with_producer: bool = True, pool_size: int = 5, max_overflow: int = 5):
        self.settings = settings
        self.engine = make_engine(settings.database_url, pool_size=pool_size, max_overflow=max_overflow)
        if settings.trace_sql:
            instrument_engine(self.engine)
        self.sessions = make_sessionmaker(self.engine)
        self.keys = PublicKeyRing(settings.keys_dir)
        self.party = settings.node.party
        private_key = load_private_key(settings.private_key)
        self._tokens = TokenCache(private_key, self.party)
        self.producer = Producer(settings.kafka_bootstrap, signer=MessageSigner(private_key, self.party), watch_lost_logs=settings.kafka_watch_lost_logs) if with_producer else None
        self.http = http_client(settings)
        self._tasks: list[asyncio.Task] = []
        self._loops: list[Callable[[], Awaitable[None]]] = []

    def run_also(self, loop: Callable[[], Awaitable[None]]) -> None:
        """One more loop for the life of the process (added while the app is built, before it starts)."""
        self._loops.append(loop)

    def token_for(self, audience: str, *, subject: str | None = None, lifetime_seconds: int = 300, claims: dict | None = None) -> str:
        """A signed token for ``audience``; a plain service token is reused for a while (:class:`TokenCache`)."""
        return self._tokens.token_for(audience, subject=subject, lifetime_seconds=lifetime_seconds, claims=claims)

    def record_gate(self) -> RecordGate:
        """What this node's consumers check of every record: its signature by a node of the network, and that node's
        entitlement to it (services/common/entitlement.py)."""
        topology = self.settings.topology_model

        def entitled(signer: str, topic: str, kind: str, payload: dict) -> None:
            check_entitled(topology, signer=signer, topic=topic, kind=kind, payload=payload)

        return RecordGate(self.keys, entitled=entitled, max_age_seconds=self.settings.message_max_age_seconds)

    async def publish_outbox_row(self, row) -> None:
        """Outbox delivery to Kafka: the row's destination is the topic, its key the record key."""
        assert self.producer is not None
        return await self.producer.enqueue(row.destination, key=row.key, value=row.payload.encode(), headers={HEADER_MESSAGE_KIND: row.kind})

    def kafka_outbox_relay(self, outbox_model, *, poll_seconds: float | None = None) -> OutboxRelay:
        """The relay publishing ``outbox_model``'s rows to Kafka, sending again what a broker restarted empty forgot.

        ``poll_seconds``: how often it looks when nobody woke it (default: the setting)."""
        assert self.producer is not None
        relay = OutboxRelay(self.sessions, outbox_model, self.publish_outbox_row, poll_seconds=poll_seconds or self.settings.outbox_poll_seconds,
                            resend_window_seconds=self.settings.resend_after_broker_reset_seconds)
        self.producer.on_log_reset(relay.resend_after_log_reset)
        return relay

    def refusal_recorder(self, refusal_model) -> Callable[[Request, str, str], Awaitable[None]]:
        """Records a refused request. Everything in it may come from the caller (a path, a claimed issuer, a value
        echoed in the detail): control characters and lone surrogates are escaped, since PostgreSQL text holds no NUL
        and the insert that records the refusal must not fail on what it records."""

        async def record(request: Request, slug: str, detail: str) -> None:
            caller = getattr(request.state, "caller", None)
            row = refusal_model(method=escaped(request.method, 10), path=escaped(request.url.path, 400), caller=None if caller is None else escaped(caller, 200),
                                reason=escaped(slug, 64), detail=escaped(detail, 8000))
            with not_a_change():  # recording a refusal is not the request's change: a 5xx still releases its idempotency key
                async with self.sessions() as session, session.begin():
                    session.add(row)

        return record

    def background(self, *coroutines: Callable[[], Awaitable[None]]):
        """A FastAPI lifespan that runs these loops for the life of the process."""

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI):
            app.state.runtime = self  # for /ready and the operator endpoints
            async with self.running(*coroutines):
                yield

        return lifespan

    @contextlib.asynccontextmanager
    async def running(self, *coroutines: Callable[[], Awaitable[None]]):
        """Start the producer and these loops; on leaving, stop them and release every resource."""
        if self.producer is not None:
            await self._start_producer()
        self._tasks = [asyncio.create_task(c()) for c in (*coroutines, *self._loops)]
        if self.producer is not None:  # its relays hear of a broker that lost its log (kafka_outbox_relay)
            self._tasks.append(asyncio.create_task(self.producer.watch_logs_forever()))
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
    """``/health`` (the process answers), ``/ready`` (its database, and its broker if it produces) and ``/metrics``."""
    from fastapi.responses import JSONResponse, Response
    from sqlalchemy import text

    from services.common import metrics

    @app.get("/health", include_in_schema=False)
    async def health() -> dict:
        return {"status": "ok", "node": settings.node.id}

    @app.get("/ready", include_in_schema=False)
    async def ready(request: Request) -> JSONResponse:
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        checks: dict[str, bool] = {"database": False}
        if rt is not None:
            try:
                async with rt.engine.connect() as conn:
                    await asyncio.wait_for(conn.execute(text("select 1")), timeout=2.0)
                checks["database"] = True
            except Exception:
                pass
            if rt.producer is not None:
                checks["broker"] = await rt.producer.ready()
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not-ready", "node": settings.node.id, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        await metrics.refresh()
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    add_operator_routes(app, settings)


OPERATOR_PARTY = "operator"


def add_operator_routes(app: FastAPI, settings: ServiceSettings) -> None:
    """Operator-only endpoints (token signed by the ``operator`` key): outbox replay."""
    from fastapi import Depends, Query

    from services.common import metrics
    from services.common.auth import bearer_verifier
    from services.common.problems import ProblemError

    async def operator(request: Request):
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        if rt is None:
            raise ProblemError(503, "not-ready", "The service is starting")
        return await bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party == OPERATOR_PARTY)(request)

    @app.post("/internal/v1/operator/outbox/replay", tags=["operations"], dependencies=[Depends(operator)])
    async def replay_outbox(from_id: int = Query(ge=1, le=BIGINT_MAX), to_id: int = Query(ge=1, le=BIGINT_MAX)) -> dict:
        """Deliver outbox rows from_id..to_id again, oldest first (receivers are idempotent)."""
        if to_id < from_id:
            raise ProblemError(400, "invalid-range", "to_id is before from_id")
        relays = [watched for watched in metrics.outboxes() if isinstance(watched, OutboxRelay)]  # a backlog that is only watched (bulk results) is not relayed
        if not relays:
            raise ProblemError(404, "no-outbox", "This node has no outbox")
        replayed = sum([await relay.replay(from_id=from_id, to_id=to_id) for relay in relays])
        return {"node": settings.node.id, "replayed": replayed, "from_id": from_id, "to_id": to_id}


def serve(build_app: Callable[[ServiceSettings], FastAPI], service_dir: Path) -> None:
    """Run one service: migrate its own database, then serve HTTP and its loops."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the log (the registers poll their CS); traces keep them
    settings = ServiceSettings()
    setup_tracing(settings.node.id, trace_file=settings.trace_file, otlp_endpoint=settings.otlp_endpoint)
    from services.common.metrics import setup_metrics

    setup_metrics(settings.node.id)
    run_migrations(service_dir, settings.database_url)
    app = build_app(settings)
    add_health(app, settings)
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # one server span per request: the ASGI "http send"/"http receive" sub-spans (three or more per request) say nothing an operator follows
    FastAPIInstrumentor.instrument_app(app, excluded_urls="health,ready,metrics", exclude_spans=["receive", "send"])
    _Server(server_config(app, settings)).run()
