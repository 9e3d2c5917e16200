"""The transactional outbox and its relay.

A state change and the message announcing it are written in one database
transaction; the relay then delivers outbox rows in order and marks them sent.
A crash between delivery and marking re-delivers (at-least-once); receivers
are idempotent, so nothing is lost and nothing is applied twice.

A row its receiver refuses for good (:class:`DeliveryRefused`: it answered
400, 409, 413, 415 or 422, "this will never fit") is set aside: marked
``refused_at`` with the reason, counted (``jukinet_refusals_total{channel="outbox"}``),
and the rows after it flow on. One bad message never stops an outbox. An
operator sees it in the table and can send it again (replay) once mended.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from opentelemetry import trace
from sqlalchemy import BigInteger, DateTime, Integer, String, Text, bindparam, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.common import metrics
from services.common.safe_text import escaped
from services.common.telemetry import context_from_traceparent, current_traceparent, tracer

log = logging.getLogger(__name__)


class OutboxMixin:
    """Columns of an outbox table; each service declares its own ``outbox`` table with it."""

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(200))  # a topic, or "http:<node id>"
    key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    traceparent: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    refused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # set aside: its receiver refused it for good (last_error says why)


#: What a receiver answers when it will never take a delivery as it is (the row is set aside). Others are kept
#: and tried again: 401/403 (keys or grants being rolled out), 404 (a receiver not upgraded yet), 408/429, 5xx.
REFUSAL_STATUSES = frozenset({400, 409, 413, 415, 422})


class DeliveryRefused(Exception):
    """The receiver refused the delivery for good (a status of :data:`REFUSAL_STATUSES`), with its reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"refused with {status}: {reason}")
        self.status = status
        self.reason = reason


#: Relay passes start at least this far apart. Each pass costs a transaction, a claim and a mark whatever it
#: carries; under load, commits come faster than passes finish and one pass then takes several commits' rows.
RELAY_PACE_SECONDS = 0.05
#: The wakeup events of this process's relays, per outbox table (each :class:`OutboxRelay` adds its own).
_RELAY_WAKEUPS: dict[object, weakref.WeakSet] = {}
#: Session info key: the outbox tables the open transaction wrote to.
_WROTE_TO = "jukinet.outbox.wrote_to"


def enqueue(session: AsyncSession, outbox_model, *, destination: str, key: str, kind: str, payload: str) -> None:
    """Add an outbox row to the caller's transaction, carrying the active trace; its relay is woken when the transaction commits."""
    session.add(outbox_model(destination=destination, key=key, kind=kind, payload=payload, traceparent=current_traceparent(), attempts=0))
    getattr(session, "sync_session", session).info.setdefault(_WROTE_TO, set()).add(outbox_model)


@event.listens_for(Session, "after_commit")
def _wake_relays(session: Session) -> None:
    """After the commit, not before: a relay woken earlier would not see the rows yet. A transaction that wrote
    no outbox row wakes no relay, so no relay pass looks for nothing. Releasing a savepoint sends this event
    too; that is not yet the commit, so it wakes nothing and the note stays for the real one."""
    if session.in_nested_transaction():
        return
    for outbox_model in session.info.pop(_WROTE_TO, ()):
        for wakeup in _RELAY_WAKEUPS.get(outbox_model, ()):
            wakeup.set()


@event.listens_for(Session, "after_rollback")
def _forget_rows_rolled_back(session: Session) -> None:
    """The transaction's rows are gone. A savepoint rolled back leaves the rows written before it, so the note stays
    (at worst, the commit wakes a relay that then finds nothing)."""
    if not session.in_nested_transaction():
        session.info.pop(_WROTE_TO, None)


Deliver = Callable[[object], Awaitable[Awaitable[None] | None]]
#: Delivers the rows of one pass in order, all or nothing (e.g. one HTTP request).
DeliverBatch = Callable[[list], Awaitable[None]]


async def poll_forever(work: Callable[[], Awaitable[int]], *, wakeup: asyncio.Event, idle_seconds: float, what: str,
                       full: int | None = None, pace_seconds: float = 0.0) -> None:
    """Run ``work`` again and again; when it did nothing, sleep until woken or ``idle_seconds`` pass.

    With ``full`` (the most one pass takes), a pass that did less took all
    there was, so the loop sleeps too instead of looking once more for
    nothing. The wakeup is then cleared before each pass: whatever woke it
    during the pass is looked at by the next one. Passes start at least
    ``pace_seconds`` apart: an idle loop answers at once, a busy one takes
    what several wakeups brought in one pass.

    A failed pass is logged and retried: a loop of a service never dies of one error.
    """
    loop = asyncio.get_running_loop()
    last_start = float("-inf")
    while True:
        if (wait := last_start + pace_seconds - loop.time()) > 0:
            await asyncio.sleep(wait)
        last_start = loop.time()
        if full is not None:
            wakeup.clear()
        try:
            done = await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)
            done = 0
        if done == 0 or (full is not None and done < full):
            try:
                await asyncio.wait_for(wakeup.wait(), timeout=idle_seconds)
            except TimeoutError:
                pass
            if full is None:
                wakeup.clear()


class OutboxBacklog:
    """How many rows of one outbox table are not delivered yet (the ``jukinet_outbox_backlog`` gauge)."""

    def __init__(self, sessions: async_sessionmaker, outbox_model):
        self._sessions = sessions
        self._model = outbox_model
        self.name = getattr(outbox_model, "__tablename__", "outbox")

    async def backlog(self) -> int:
        """Rows not yet delivered."""
        async with self._sessions() as session:
            return (await session.execute(select(func.count()).select_from(self._model).where(self._model.sent_at.is_(None), self._model.refused_at.is_(None)))).scalar_one()


class OutboxRelay(OutboxBacklog):
    """Delivers unsent rows oldest first; stops at the first failure to keep per-key order."""

    def __init__(self, sessions: async_sessionmaker, outbox_model, deliver: Deliver | None = None, *, deliver_batch: DeliverBatch | None = None, poll_seconds: float = 0.2, batch: int = 200, resend_window_seconds: float = 900.0):
        if (deliver is None) == (deliver_batch is None):
            raise ValueError("give exactly one of deliver (per row) or deliver_batch (all rows of a pass at once)")
        super().__init__(sessions, outbox_model)
        self._deliver = deliver
        self._deliver_batch = deliver_batch
        self._poll = poll_seconds
        self._batch = batch
        self._resend_window = resend_window_seconds
        self._resend_topics: set[str] = set()
        self.wakeup = asyncio.Event()
        _RELAY_WAKEUPS.setdefault(outbox_model, weakref.WeakSet()).add(self.wakeup)  # enqueue's commits wake it
        metrics.watch_outbox(self)
        # built once: a relay runs these on every pass
        table = outbox_model.__table__
        # (table rows, not ORM objects: a pass reads them once and changes them only through these statements)
        self._claim = select(table).where(table.c.sent_at.is_(None), table.c.refused_at.is_(None)).order_by(table.c.id).limit(batch).with_for_update(skip_locked=True)
        self._mark = update(table).where(table.c.id.in_(bindparam("ids", expanding=True))).values(sent_at=func.now(), attempts=table.c.attempts + 1)
        self._note_failure = update(table).where(table.c.id == bindparam("at_id")).values(attempts=table.c.attempts + 1, last_error=bindparam("error"))
        self._set_aside = update(table).where(table.c.id == bindparam("at_id")).values(attempts=table.c.attempts + 1, refused_at=func.now(), last_error=bindparam("error"))

    async def replay(self, *, from_id: int, to_id: int) -> int:
        """Deliver rows ``from_id``..``to_id`` again, in order (operator replay).

        Safe because every receiver is idempotent (versions, event and record
        ids); the relay delivers them again oldest first. Rows set aside as
        refused go again too (the operator mended the receiver or the row).
        """
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(self._model).where(self._model.id >= from_id, self._model.id <= to_id, (self._model.sent_at.is_not(None)) | (self._model.refused_at.is_not(None)))
                .values(sent_at=None, refused_at=None, last_error="replayed by operator")
            )
        self.wakeup.set()
        return result.rowcount

    def resend_after_log_reset(self, topic: str) -> None:
        """The broker forgot ``topic``: send again the rows delivered to it lately (next pass).

        Rows sent within ``resend_window_seconds`` may not have been consumed
        yet when the broker lost them; receivers are idempotent, so sending
        the consumed ones again is harmless. Older losses are for the
        reconciliation and the operator's replay.
        """
        self._resend_topics.add(topic)
        self.wakeup.set()

    async def _mark_for_resend(self) -> None:
        topics_lost, self._resend_topics = self._resend_topics, set()
        try:
            async with self._sessions() as session, session.begin():
                result = await session.execute(
                    update(self._model)
                    .where(self._model.destination.in_(topics_lost), self._model.sent_at.is_not(None),
                           self._model.sent_at >= func.now() - timedelta(seconds=self._resend_window))
                    .values(sent_at=None, last_error="sent again: the broker restarted without its log")
                )
        except Exception:
            self._resend_topics |= topics_lost  # not marked: the next pass tries again
            raise
        log.warning("%s: %s rows sent to %s lately go again (the broker lost them)", self.name, result.rowcount, ", ".join(sorted(topics_lost)))

    async def run_once(self) -> int:
        """Hand a batch to the deliverer in order, then wait for every acknowledgement.

        ``deliver`` may return an awaitable acknowledgement (Kafka: the batch is
        pipelined) or deliver synchronously (HTTP). Rows are marked sent only up
        to the first failure; the rest are tried again, in order, later. A row
        the receiver refuses for good (:class:`DeliveryRefused`) is set aside and
        the pass goes on. Returns the rows dealt with (delivered or set aside).
        """
        if self._resend_topics:
            await self._mark_for_resend()
        done = 0
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(self._claim)).all()
            if self._deliver_batch is not None:
                return await self._hand_over_batch(session, rows)
            handed: list[tuple[object, object]] = []
            failed = None
            for row in rows:
                with tracer().start_as_current_span(
                    f"outbox deliver {row.kind}", context=context_from_traceparent(row.traceparent), kind=trace.SpanKind.PRODUCER,
                    attributes={"messaging.destination.name": row.destination, "jukinet.outbox.id": row.id},
                ):
                    try:
                        handed.append((row, await self._deliver(row)))
                    except DeliveryRefused as exc:
                        if any(ack is not None for _, ack in handed):
                            failed = (row, exc)  # acknowledgements pending: this row is looked at again next pass, after them
                            break
                        await self._mark_sent(session, [r.id for r, _ in handed])  # those before it were delivered already
                        done += len(handed) + 1
                        handed = []
                        await self._refused(session, row, exc)
                    except Exception as exc:
                        failed = (row, exc)
                        break
            delivered = 0
            for position, (row, ack) in enumerate(handed):
                if ack is not None:
                    try:
                        await ack
                    except Exception as exc:
                        failed = (row, exc)
                        for _, later in handed[position + 1:]:
                            if later is not None:
                                later.close()  # not waited for: those rows stay unsent and go again
                        break
                delivered += 1
            await self._mark_sent(session, [row.id for row, _ in handed[:delivered]])
            done += delivered
            if failed is not None:  # keep the row, retry later, keep order
                row, exc = failed
                await self._keep_for_retry(session, row, exc)
                log.warning("outbox delivery of %s failed: %s: %s", row.id, type(exc).__name__, exc)
        return done

    async def _refused(self, session: AsyncSession, row, exc: DeliveryRefused) -> None:
        """Set the row aside: its receiver will never take it; the rows after it flow on."""
        await session.execute(self._set_aside, {"at_id": row.id, "error": escaped(f"refused ({exc.status}): {exc.reason}", 2000)})
        metrics.count_refusal(channel="outbox", reason=f"{self.name}-{exc.status}")
        log.error("outbox row %s (%s, %s) set aside: its receiver refused it with %s: %s", row.id, row.kind, row.key, exc.status, escaped(exc.reason, 500))

    async def _keep_for_retry(self, session: AsyncSession, row, exc: Exception) -> None:
        await session.execute(self._note_failure, {"at_id": row.id, "error": f"{type(exc).__name__}: {exc}"[:2000]})

    async def _hand_over_batch(self, session: AsyncSession, rows: list) -> int:
        if not rows:
            return 0
        with tracer().start_as_current_span(f"outbox deliver batch of {len(rows)}", kind=trace.SpanKind.PRODUCER, attributes={"jukinet.outbox.first_id": rows[0].id}):
            try:
                await self._deliver_batch(rows)
            except DeliveryRefused as exc:  # something in it will never fit: find it, one row at a time
                if len(rows) == 1:
                    await self._refused(session, rows[0], exc)
                    return 1
                log.warning("outbox batch of %s rows from %s refused (%s); delivering them one by one", len(rows), rows[0].id, exc.status)
                return await self._hand_over_one_by_one(session, rows)
            except Exception as exc:  # nothing was taken: keep every row, retry later, in order
                await self._keep_for_retry(session, rows[0], exc)
                log.warning("outbox delivery of %s rows from %s failed: %s: %s", len(rows), rows[0].id, type(exc).__name__, exc)
                return 0
        await self._mark_sent(session, [row.id for row in rows])
        return len(rows)

    async def _hand_over_one_by_one(self, session: AsyncSession, rows: list) -> int:
        """After a refused batch: each row alone, in order; the refused ones set aside, until one fails otherwise."""
        done = 0
        for row in rows:
            try:
                await self._deliver_batch([row])
            except DeliveryRefused as exc:
                await self._refused(session, row, exc)
            except Exception as exc:
                await self._keep_for_retry(session, row, exc)
                log.warning("outbox delivery of %s failed: %s: %s", row.id, type(exc).__name__, exc)
                break
            else:
                await self._mark_sent(session, [row.id])
            done += 1
        return done

    async def _mark_sent(self, session: AsyncSession, ids: list[int]) -> None:
        """One UPDATE for the whole pass (marking each ORM row would be one statement per row)."""
        if ids:
            await session.execute(self._mark, {"ids": ids})

    async def run_forever(self) -> None:
        await poll_forever(self.run_once, wakeup=self.wakeup, idle_seconds=self._poll, what="outbox relay pass", full=self._batch, pace_seconds=RELAY_PACE_SECONDS)
