"""The outbox relay on a real PostgreSQL: a transaction that wrote outbox rows wakes the relay when it
commits (nobody has to remember to), a transaction that wrote none and one that rolled back wake
nothing, and a pass that took less than a full batch is not followed by a pass that looks for nothing."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import make_engine, make_sessionmaker
from services.common.outbox import OutboxMixin, OutboxRelay, enqueue
from tests.e2e.helpers import tenant_database

POLL_SECONDS = 30.0  # far longer than any wait below: only a wakeup explains a prompt pass


class _Base(DeclarativeBase):
    pass


class _Outbox(OutboxMixin, _Base):
    __tablename__ = "outbox"


class _Note(_Base):
    __tablename__ = "note"
    value: Mapped[str] = mapped_column(String(100), primary_key=True)


async def _until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _scenario(url: str) -> dict:
    engine = make_engine(url, pool_size=2, max_overflow=0)
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    sessions = make_sessionmaker(engine)
    delivered: list[str] = []

    async def deliver_batch(rows) -> None:
        delivered.extend(row.payload for row in rows)

    relay = OutboxRelay(sessions, _Outbox, deliver_batch=deliver_batch, poll_seconds=POLL_SECONDS)
    passes = 0
    run_once = relay.run_once

    async def counted() -> int:
        nonlocal passes
        passes += 1
        return await run_once()

    relay.run_once = counted
    loop = asyncio.create_task(relay.run_forever())
    seen: dict = {}

    async def undelivered() -> int:
        async with sessions() as session:
            return (await session.execute(text("select count(*) from outbox where sent_at is null"))).scalar_one()

    try:
        await _until(lambda: passes == 1, "the first pass")  # at start: nothing there
        async with sessions() as session, session.begin():
            for value in ("a", "b", "c"):
                enqueue(session, _Outbox, destination="http:somewhere", key=value, kind="test", payload=value)
        await _until(lambda: delivered == ["a", "b", "c"], "delivery after the commit")
        while await undelivered():  # marked sent: a pass that looked again at once would have begun by now
            await asyncio.sleep(0.02)
        seen["passes for one committed transaction"] = passes - 1

        # the wakeup is set, or not, by the commit itself: looked at before anything else runs
        async with sessions() as session:
            async with session.begin():
                session.add(_Note(value="no outbox row"))
            seen["a commit without outbox rows wakes the relay"] = relay.wakeup.is_set()
        async with sessions() as session:
            try:
                async with session.begin():
                    enqueue(session, _Outbox, destination="http:somewhere", key="x", kind="test", payload="rolled back")
                    raise RuntimeError("the change fails")
            except RuntimeError:
                pass
            seen["a rolled back transaction wakes the relay"] = relay.wakeup.is_set()
            async with session.begin():
                session.add(_Note(value="later, in the same session"))
            seen["its later commit without rows wakes the relay"] = relay.wakeup.is_set()

        # a savepoint's release is not the commit: the relay is woken by the commit, and then delivers
        async with sessions() as session:
            async with session.begin():
                async with session.begin_nested():
                    enqueue(session, _Outbox, destination="http:somewhere", key="n", kind="test", payload="in a savepoint")
                seen["a released savepoint wakes the relay"] = relay.wakeup.is_set()
                try:
                    async with session.begin_nested():
                        raise RuntimeError("a savepoint rolled back")
                except RuntimeError:
                    pass
            seen["the commit after savepoints wakes the relay"] = relay.wakeup.is_set()
        await _until(lambda: delivered[-1:] == ["in a savepoint"], "delivery of the row written in a savepoint")
        seen["rows left undelivered"] = await undelivered()

        # a failed delivery keeps the row, with the reason, and the next pass delivers it
        failures = ["the CS did not answer"]
        real_deliver = relay._deliver_batch

        async def failing_once(rows) -> None:
            if failures:
                raise RuntimeError(failures.pop())
            await real_deliver(rows)

        relay._deliver_batch = failing_once
        async with sessions() as session, session.begin():
            enqueue(session, _Outbox, destination="http:somewhere", key="z", kind="test", payload="z")
        await _until(lambda: not failures, "the failed pass")
        async with sessions() as session, session.begin():  # the next commit wakes the relay: the kept row goes first
            enqueue(session, _Outbox, destination="http:somewhere", key="z", kind="test", payload="after z")
        await _until(lambda: delivered[-2:] == ["z", "after z"], "delivery after a failed pass")
        async with sessions() as session:
            seen["the failed row's attempts and reason"] = tuple(
                (await session.execute(text("select attempts, last_error from outbox where payload = 'z'"))).one())
    finally:
        loop.cancel()
        await engine.dispose()
    seen["delivered"] = delivered
    return seen


def test_a_commit_with_outbox_rows_wakes_the_relay_once_and_nothing_else_does(tmp_path):
    with tenant_database(tmp_path, "outbox_test") as (_, url):
        seen = asyncio.run(_scenario(url))
    assert seen == {
        "passes for one committed transaction": 1,
        "a commit without outbox rows wakes the relay": False,
        "a rolled back transaction wakes the relay": False,
        "its later commit without rows wakes the relay": False,
        "a released savepoint wakes the relay": False,
        "the commit after savepoints wakes the relay": True,
        "rows left undelivered": 0,
        "the failed row's attempts and reason": (2, "RuntimeError: the CS did not answer"),
        "delivered": ["a", "b", "c", "in a savepoint", "z", "after z"],
    }
