"""A producer that stays quiet still learns that the broker restarted without its log.

Only the embedded broker runs here (it keeps nothing when it stops). The
producer sends a few records, the broker is killed and started empty, and the
producer sends nothing more: its periodic check of the last record of each
partition must announce every topic it wrote to, so its outbox relays send
again what the broker forgot (``OutboxRelay.resend_after_log_reset``).
"""

from __future__ import annotations

import asyncio
import json
import time

from services.common.embedded import EmbeddedBroker, free_port
from services.common.kafka import VERIFY_EVERY_SECONDS, Producer


async def _scenario(broker: EmbeddedBroker) -> tuple[list[str], list[str]]:
    producer = Producer(broker.bootstrap)
    heard: list[str] = []
    producer.on_log_reset(heard.append)
    await producer.start()
    watcher = asyncio.create_task(producer.watch_logs_forever())
    try:
        for i in range(6):
            await producer.send("jukinet.test.quiet", key=f"person-{i}", value=b"{}")
        await asyncio.sleep(VERIFY_EVERY_SECONDS * 2.5)
        before_restart = list(heard)  # the broker still holds everything: nothing to announce
        broker.stop(kill=True)
        broker.start()
        deadline = time.monotonic() + 60
        while not heard and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return before_restart, heard
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await producer.stop()


def test_a_quiet_producer_hears_that_the_broker_lost_its_log(tmp_path):
    broker = EmbeddedBroker(free_port(), tmp_path / "broker.log")
    broker.start()
    try:
        before_restart, heard = asyncio.run(_scenario(broker))
    finally:
        broker.stop(kill=True)
    assert before_restart == []
    assert heard == ["jukinet.test.quiet"]


async def _shared_topic_scenario(broker: EmbeddedBroker) -> tuple[list[str], list[str]]:
    """Two producers of one partition; after the broker comes back empty, the busy one refills it past
    the offset the quiet one knew, before the quiet one sends again."""
    quiet, busy = Producer(broker.bootstrap), Producer(broker.bootstrap)
    heard: list[str] = []
    quiet.on_log_reset(heard.append)
    await quiet.start()
    await busy.start()
    try:
        topic = "jukinet.test.shared"
        await quiet.send(topic, key="same-person", value=b'"quiet"')
        for i in range(3):
            await busy.send(topic, key="same-person", value=f'"busy {i}"'.encode())
        before_restart = list(heard)
        broker.stop(kill=True)
        broker.start()
        for i in range(10):  # the new log grows past every offset the quiet producer knew
            await _send_when_back(busy, topic, key="same-person", value=f'"busy again {i}"'.encode())
        await _send_when_back(quiet, topic, key="same-person", value=b'"quiet again"')  # no watcher runs: the send itself must tell
        return before_restart, heard
    finally:
        await quiet.stop()
        await busy.stop()


async def _send_when_back(producer: Producer, topic: str, *, key: str, value: bytes) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            await producer.send(topic, key=key, value=value)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def test_a_producer_whose_partition_others_refilled_hears_that_the_broker_lost_its_log(tmp_path):
    broker = EmbeddedBroker(free_port(), tmp_path / "broker.log")
    broker.start()
    try:
        before_restart, heard = asyncio.run(_shared_topic_scenario(broker))
    finally:
        broker.stop(kill=True)
    assert before_restart == []
    assert heard == ["jukinet.test.shared"]


# --- the whole path: outbox relay, producer, and a consumer that keeps running ---

from sqlalchemy import String, func, select  # noqa: E402
from sqlalchemy.dialects.postgresql import insert  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column  # noqa: E402

from services.common.db import make_engine, make_sessionmaker  # noqa: E402
from tests.e2e.helpers import tenant_database  # noqa: E402
from services.common.kafka import ConsumerOffsetMixin, DeadLetterMixin, MessageReceiptMixin, StoredOffsetConsumer  # noqa: E402
from services.common.message_signing import MessageSigner, RecordGate  # noqa: E402
from services.common.tokens import PublicKeyRing, generate_key_pair, load_private_key  # noqa: E402
from services.common.outbox import OutboxMixin, OutboxRelay, enqueue  # noqa: E402


class _Base(DeclarativeBase):
    pass


class _Offset(ConsumerOffsetMixin, _Base):
    __tablename__ = "consumer_offset"


class _DeadLetter(DeadLetterMixin, _Base):
    __tablename__ = "dead_letter"


class _Receipt(MessageReceiptMixin, _Base):
    __tablename__ = "message_receipts"


class _Outbox(OutboxMixin, _Base):
    __tablename__ = "outbox"


class _Applied(_Base):
    __tablename__ = "applied"
    value: Mapped[str] = mapped_column(String(100), primary_key=True)


async def _apply(session, record) -> None:
    """Idempotent, as every receiver on the network is: a record read twice changes nothing."""
    await session.execute(insert(_Applied).values(value=json.loads(record.value)["value"]).on_conflict_do_nothing())


async def _consumer_scenario(broker: EmbeddedBroker, database_url: str, keys) -> tuple[set[str], set[str]]:
    """Records sent before and after two empty restarts: fewer than were read, then many more."""
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    sessions = make_sessionmaker(engine)
    topic = "jukinet.test.consumed"
    private_dir, public_dir = keys
    producer = Producer(broker.bootstrap, signer=MessageSigner(load_private_key(generate_key_pair(private_dir, public_dir, "test-node")), "test-node"))
    gate = RecordGate(PublicKeyRing(public_dir), entitled=lambda *_: None, max_age_seconds=3600)
    await producer.start()

    async def publish(row):
        return await producer.enqueue(row.destination, key=row.key, value=json.dumps({"value": row.payload}).encode())  # consumers read JSON objects

    relay = OutboxRelay(sessions, _Outbox, publish, poll_seconds=0.2)
    producer.on_log_reset(relay.resend_after_log_reset)
    consumer = StoredOffsetConsumer(bootstrap=broker.bootstrap, topic=topic, sessions=sessions, offset_model=_Offset, dead_letter_model=_DeadLetter,
                                    gate=gate, receipt_model=_Receipt, handler=_apply, producer=producer, name="test-consumer")
    loops = [asyncio.create_task(loop()) for loop in (relay.run_forever, producer.watch_logs_forever, consumer.run_forever)]
    sent: set[str] = set()

    async def send(values: list[str]) -> None:
        async with sessions() as session, session.begin():
            for value in values:
                enqueue(session, _Outbox, destination=topic, key=value, kind="test", payload=value)
        sent.update(values)
        relay.wakeup.set()

    async def applied() -> set[str]:
        async with sessions() as session:
            return set((await session.execute(select(_Applied.value))).scalars())

    async def wait_applied(what: str) -> None:
        deadline = time.monotonic() + 60
        while not sent <= await applied():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: missing {sorted(sent - await applied())}")
            await asyncio.sleep(0.2)

    try:
        await send([f"first-{i}" for i in range(30)])
        await wait_applied("the first log")
        broker.stop(kill=True)
        broker.start()
        await send(["after-first-restart"])  # the new log is far shorter than what was read
        await wait_applied("a record in a log shorter than the one read")
        await send([f"second-{i}" for i in range(5)])
        await wait_applied("the second log")
        broker.stop(kill=True)
        broker.start()
        await send([f"third-{i}" for i in range(90)])  # the new log outgrows what was read before the consumer looks
        await wait_applied("a new log longer than the one read")
        return sent, await applied()
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await producer.stop()
        await engine.dispose()


def test_every_record_reaches_a_running_consumer_across_empty_broker_restarts(tmp_path):
    with tenant_database(tmp_path, "consumer_test") as (_, url):
        broker = EmbeddedBroker(free_port(), tmp_path / "broker.log")
        broker.start()
        try:
            sent, applied = asyncio.run(_consumer_scenario(broker, url, (tmp_path / "private", tmp_path / "public")))
        finally:
            broker.stop(kill=True)
    assert sent == applied
