"""Kafka at the edges: a producer, topic creation, and a consumer whose
offsets live in the consumer's own database.

The consumer stores its position in the same transaction as the data it
applies, so a crash at any point neither loses nor repeats an applied record.
Partitions are assigned manually (one consumer process per topic and tier),
which avoids group rebalances. If the broker was restarted empty, stored
positions lie beyond the log end and the consumer starts again from the
beginning; per-person versions make that harmless, and version gaps trigger
a resync from the tier below.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import cache

import aiokafka.admin.client
import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from opentelemetry import trace
from pydantic import ValidationError
from sqlalchemy import BigInteger, DateTime, Integer, String, Text, Uuid, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from contracts import topics
from contracts.topics import HEADER_MESSAGE_KIND
from services.common import metrics
from services.common.message_signing import MessageSigner, RecordGate, SignedBy, UntrustedRecord
from services.common.broker_security import broker_client_options
from services.common.telemetry import context_from_kafka_headers, kafka_headers_with_trace, links_to, tracer

log = logging.getLogger(__name__)

PARTITIONS = 3
VERIFY_EVERY_SECONDS = 5.0


class _MetadataRequestThatCreatesNothing(MetadataRequest):
    """A metadata request that never makes the broker create the topics it names.

    aiokafka asks with ``allow_auto_topic_creation`` on, and a broker that
    restarted empty then creates any topic a client merely asks about, with
    its own default partition count (four on Tansu), before the services
    create it with :data:`PARTITIONS`. A consumer assigned the partitions it
    knew would never read the others. Topics are created only by
    :func:`ensure_topics`; a producer whose topic is gone gets an error,
    forgets the topic and creates it before the next send.
    """

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False):
        super().__init__(topics, allow_auto_topic_creation)


aiokafka.client.MetadataRequest = _MetadataRequestThatCreatesNothing  # the aiokafka version is pinned
aiokafka.admin.client.MetadataRequest = _MetadataRequestThatCreatesNothing


def _fingerprint(key: bytes | None, value: bytes | None, message_id: bytes | None = None) -> str:
    """What tells one record from another at an offset. The message id (every record a node signs has a fresh one)
    is part of it: an outbox relay sending again what an empty broker lost produces the same key and value, and the
    new log may hold that copy at the very offset of the original while the records before it differ."""
    return hashlib.sha256((key or b"") + b"\x00" + (value or b"") + b"\x00" + (message_id or b"")).hexdigest()


def fingerprint(record: ConsumerRecord) -> str:
    message_id = next((v for k, v in record.headers or () if k == topics.HEADER_MESSAGE_ID), None)
    return _fingerprint(record.key, record.value, message_id)


async def _gone(bootstrap: str, expected: dict[tuple[str, int], tuple[int, str]]) -> list[tuple[str, int]]:
    """The partitions whose last acknowledged record the broker no longer holds.

    A short-lived consumer that asks only for topics that exist: asking the
    broker about a missing topic would make it create the topic anew, with
    its default partitions, before the services create it as they want it.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", group_id=None, **broker_client_options())
    await consumer.start()
    try:
        existing = await consumer.topics()
        present = [key for key in expected if key[0] in existing]
        gone = [key for key in expected if key[0] not in existing]  # the topic itself is gone
        if present:
            consumer.assign([TopicPartition(*key) for key in present])
            gone += [key for key in present if await _lost(consumer, TopicPartition(*key), *expected[key]) is True]
        return gone
    finally:
        await consumer.stop()


async def _lost(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, mark: str | None) -> bool | None:
    """Whether the broker lost the record once read or acknowledged at ``offset``: True, False, or None when its answer proves nothing.

    The record itself is fetched. Tansu answers a fetch beyond the log end
    with no records and no error, so the high watermark of that fetch tells
    a shorter, new log (its ListOffsets is not believed: it can report a log
    end far below the real one while several producers write). Without a
    ``mark`` to compare, a record found at ``offset`` is taken as the same.
    """
    consumer.seek(tp, offset)
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # short fetches: a fetch's answer (a record, or a log end at or below it) ends the wait
        records = (await consumer.getmany(tp, timeout_ms=250, max_records=1)).get(tp, [])
        highwater = consumer.highwater(tp)
        if records or (highwater is not None and highwater <= offset):
            break
    highwater = consumer.highwater(tp)
    if records and records[0].offset == offset:
        return mark is not None and fingerprint(records[0]) != mark
    if records and records[0].offset > offset:
        return False  # retention removed it: the same log, moved on
    if highwater is not None and highwater <= offset:
        return True  # the log ends before that record: a new, shorter log
    return None


class ConsumerOffsetMixin:
    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    # digest of the record at next_offset - 1: tells whether the broker still holds the log we read
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class DeadLetterMixin:
    """What this service refused from Kafka, with the reason (also sent to the dead-letter topic)."""

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(200))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    refused_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MessageReceiptMixin:
    """The id of every signed record a consumer took: the same record produced again is a replay."""

    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    signer: Mapped[str] = mapped_column(String(200))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


#: Receipts older than the acceptance window are let go every so often: a record that old is refused anyway.
PRUNE_RECEIPTS_EVERY_SECONDS = 3600.0


async def ensure_topics(bootstrap: str, names: list[str]) -> None:
    """Create the topics that are missing, with :data:`PARTITIONS` partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **broker_client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in missing])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


class Producer:
    """Plain at-least-once producer (the embedded broker has no idempotent producers).

    It also notices a broker that came back without its log: the offset it
    acknowledges for a partition falls below one it acknowledged before.
    Whoever registered with :meth:`on_log_reset` hears the names of the
    topics it wrote to, so an outbox relay can send again what the broker
    forgot.
    """

    def __init__(self, bootstrap: str, *, signer: MessageSigner | None = None, watch_lost_logs: bool = True):
        self._bootstrap = bootstrap
        self._watch_lost_logs = watch_lost_logs  # off where the broker keeps its log (compose's Kafka): nothing to read back
        self._signer = signer  # every record this node produces carries its signature (message_signing.py)
        self._producer: AIOKafkaProducer | None = None
        self._known_topics: set[str] = set()
        self._log_ends: dict[tuple[str, int], int] = {}  # (topic, partition) → highest offset acknowledged
        self._last_records: dict[tuple[str, int], tuple[int, str]] = {}  # (topic, partition) → (offset, fingerprint) of that record
        self._reset_listeners: list[Callable[[str], None]] = []
        self._resets = 0  # how many lost logs were announced: a check that overlaps one announces nothing
        self._checked_connections: list[object] | None = None  # the broker connections the last records were proven on
        self._unproven: dict[tuple[str, int], tuple[int, str]] | None = None  # last records from before a reconnect, until checked
        self._checking = asyncio.Lock()

    def on_log_reset(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(topic)`` whenever a partition of ``topic`` turns out to have lost its log."""
        self._reset_listeners.append(listener)

    def _acknowledged_at(self, topic: str, partition: int, offset: int, mark: str | None = None) -> None:
        """Book an acknowledged offset; one that went backwards means the broker lost its log.

        A broker restarted empty has forgotten every topic, not only the one
        that showed it, so every topic this producer wrote to is announced,
        once: what is known of the old logs is forgotten with them.
        """
        key = (topic, partition)
        known = self._log_ends.get(key)
        last = self._last_records.get(key)
        # the same offset as the last record, for another record: a new log that has grown back to
        # it (a partition written once before the broker restarted shows nothing else: 0 again)
        replaced = known == offset and mark is not None and last is not None and last[0] == offset and last[1] != mark
        if known is not None and (offset < known or replaced):
            log.warning("the broker acknowledged offset %s on %s/%s after %s: it lost its log (restarted empty)", offset, topic, partition, known)
            self._announce_lost_logs()
            known = None
        self._log_ends[key] = offset if known is None else max(known, offset)
        if mark is not None and self._log_ends[key] == offset:
            self._last_records[key] = (offset, mark)

    def _connections(self) -> list[object]:
        """The producer's open connections to the broker (aiokafka's own list; the version is pinned): a broker
        that restarted closed them all, so a record acknowledged on another list went over a new connection."""
        assert self._producer is not None
        return list(self._producer.client._conns.values())  # noqa: SLF001

    async def _check_after_reconnect(self) -> None:
        """Before an acknowledgement over new connections is booked, prove the broker still holds the last records of before.

        Several producers share a topic (two prefecture servers, every CS of a
        prefecture): by the time this one sends again after the broker came
        back empty, the others may have written its partitions past the
        offsets it knew, so its own offsets never go back. Only the records
        themselves tell (:func:`_lost`). Until a check proves them either way
        (the broker may still be away), they stay to be checked, by the next
        acknowledgement or by :meth:`watch_logs_forever`.
        """
        async with self._checking:
            current = self._connections()
            if current == self._checked_connections:
                return  # another acknowledgement checked meanwhile
            if self._unproven is None:
                self._unproven = dict(self._last_records)
            if not self._unproven:
                self._unproven, self._checked_connections = None, current
                return
            try:
                await self._check_records(self._unproven)
            except Exception as exc:  # broker away: nothing proven, checked again later
                log.info("checking the broker's logs after a reconnect failed (%s); again later", exc)
                return
            self._unproven, self._checked_connections = None, current

    async def _check_records(self, expected: dict[tuple[str, int], tuple[int, str]]) -> None:
        """Announce lost logs if the broker no longer holds these records (asked twice: a busy broker answers oddly once)."""
        resets = self._resets
        gone = await _gone(self._bootstrap, expected)
        if gone:
            await asyncio.sleep(0.5)
            gone = [key for key in await _gone(self._bootstrap, {key: expected[key] for key in gone}) if key in gone]
        if gone and resets == self._resets:
            log.warning("the broker no longer holds the records acknowledged last on %s: it lost its log (restarted empty)",
                        ", ".join(f"{t}/{p}" for t, p in gone))
            self._announce_lost_logs()

    def _announce_lost_logs(self) -> None:
        lost = sorted({t for t, _ in self._log_ends} | {t for t, _ in self._unproven or ()})
        self._log_ends, self._last_records, self._unproven = {}, {}, None
        self._known_topics.clear()  # an empty broker lost the topics too: create them again, as we want them, before sending
        self._resets += 1
        for lost_topic in lost:
            for listener in self._reset_listeners:
                listener(lost_topic)

    async def watch_logs_forever(self) -> None:
        """Check now and then that the broker still holds the last record acknowledged on each partition.

        An acknowledged offset going back shows a lost log only when this
        producer sends again, to a partition it wrote to before, at an offset
        below the one it knew; a quiet producer would never notice. So the
        last record of each partition is fetched and compared (a fetch's high
        watermark is reliable where Tansu's ListOffsets is not), twice before
        it is believed.
        """
        if not self._watch_lost_logs:
            return
        while True:
            await asyncio.sleep(VERIFY_EVERY_SECONDS)
            if not self._reset_listeners:
                continue
            try:
                if self._unproven is not None:
                    await self._check_after_reconnect()
                elif self._last_records:
                    await self._check_records(dict(self._last_records))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker away: nothing proven, look again later
                log.info("checking the broker's logs failed (%s); again later", exc)

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, enable_idempotence=False, acks="all", request_timeout_ms=10000, **broker_client_options())
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def ready(self, timeout: float = 2.0) -> bool:
        """Whether the broker answers a metadata request now (for ``/ready``)."""
        if self._producer is None:
            return False
        try:
            return bool(await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=timeout))
        except Exception:
            return False

    async def send(self, topic: str, *, key: str, value: bytes, headers: dict[str, str] | None = None) -> None:
        """Send and wait for the broker's acknowledgement."""
        await (await self.enqueue(topic, key=key, value=value, headers=headers))

    async def enqueue(self, topic: str, *, key: str, value: bytes, headers: dict[str, str] | None = None) -> Awaitable[None]:
        """Queue a record; the returned awaitable completes when the broker acknowledged it.

        Records queued one after another keep their order within a partition,
        so a relay can queue a whole batch and wait once.
        """
        assert self._producer is not None, "producer not started"
        if self._signer is not None:
            headers = {**(headers or {})}
            headers.update(self._signer.headers(topic=topic, key=key.encode(), kind=headers.get(HEADER_MESSAGE_KIND, ""), value=value))
        message_id = (headers or {}).get(topics.HEADER_MESSAGE_ID)
        mark = _fingerprint(key.encode(), value, message_id.encode() if message_id else None)
        if topic not in self._known_topics:
            await ensure_topics(self._bootstrap, [topic])
            self._known_topics.add(topic)
        with tracer().start_as_current_span(f"send {topic}", kind=trace.SpanKind.PRODUCER, attributes={"messaging.system": "kafka", "messaging.destination.name": topic}):
            try:
                future = await self._producer.send(topic, value, key=key.encode(), headers=kafka_headers_with_trace(headers))
            except Exception:
                # The broker may have restarted empty: make sure the topic exists again next time.
                self._known_topics.discard(topic)
                raise

        async def acknowledged() -> None:
            try:
                metadata = await future
            except Exception:
                self._known_topics.discard(topic)
                raise
            if self._watch_lost_logs and self._connections() != self._checked_connections:
                await self._check_after_reconnect()
            self._acknowledged_at(metadata.topic, metadata.partition, metadata.offset, mark)

        return acknowledged()


class _PartitionsChanged(Exception):
    """The broker now lists other partitions of the topic than the consumer was assigned."""


class Refuse(Exception):
    """Raised by a handler when a record must go to the dead-letter topic."""


Handler = Callable[[AsyncSession, ConsumerRecord], Awaitable[None]]


def consume_span(record: ConsumerRecord, *, consumer: str):
    """The span of one consumed record, in the trace it was sent in."""
    return tracer().start_as_current_span(
        f"consume {record.topic}", context=context_from_kafka_headers(record.headers), kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.system": "kafka", "messaging.source.name": record.topic, "messaging.kafka.offset": record.offset, "jukinet.consumer": consumer},
    )

#: Takes the records of one fetch of one partition together, in order (one transaction): for a handler whose
#: statements serve many records at once. A refusal falls back to :data:`Handler`, one record at a time.
BatchHandler = Callable[[AsyncSession, list[ConsumerRecord]], Awaitable[None]]


@cache
def _offset_update(offset_model):
    """Built once per offsets table: the statement runs for every batch a consumer applies."""
    table = offset_model.__table__
    return (
        update(table).where(table.c.topic == bindparam("at_topic"), table.c.partition == bindparam("at_partition"))
        .values(next_offset=bindparam("next"), fingerprint=bindparam("mark"), updated_at=func.now())
    )


class StoredOffsetConsumer:
    """Consumes one topic, applying each record and its offset in one transaction."""

    def __init__(self, *, bootstrap: str, topic: str, sessions: async_sessionmaker, offset_model, dead_letter_model, handler: Handler, producer: Producer, name: str,
                 gate: RecordGate, receipt_model, batch_handler: BatchHandler | None = None):
        self._bootstrap = bootstrap
        self._topic = topic
        self._sessions = sessions
        self._offsets = offset_model
        self._dead = dead_letter_model
        self._handler = handler
        self._batch_handler = batch_handler
        self._producer = producer
        self._name = name
        self._gate = gate  # signature and entitlement of every record, before the handler sees it
        self._receipts = receipt_model
        self._take_receipts_statement = text(
            f"INSERT INTO {receipt_model.__tablename__} (message_id, signer, signed_at)"
            " SELECT m, s, to_timestamp(t) FROM unnest(CAST(:ids AS uuid[]), CAST(:signers AS text[]), CAST(:times AS double precision[])) AS r(m, s, t)"
            " ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
        )
        self._receipts_pruned_at = 0.0
        self.applied = 0
        self.lag: dict[tuple[str, int], int] = {}  # (topic, partition) → records not applied yet
        metrics.watch_consumer(self)

    async def _positions(self) -> dict[int, tuple[int, str | None]]:
        async with self._sessions() as session:
            rows = (await session.execute(select(self._offsets).where(self._offsets.topic == self._topic))).scalars().all()
            return {r.partition: (r.next_offset, r.fingerprint) for r in rows}

    async def _start_consumer(self) -> AIOKafkaConsumer:
        await ensure_topics(self._bootstrap, [self._topic])
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", group_id=None, **broker_client_options())
        await consumer.start()
        partitions = consumer.partitions_for_topic(self._topic) or set()
        while not partitions:
            await consumer.topics()  # refreshes the metadata
            partitions = consumer.partitions_for_topic(self._topic) or set()
            if not partitions:
                await asyncio.sleep(0.5)
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        stored = await self._positions()
        for tp in tps:
            consumer.seek(tp, stored.get(tp.partition, (0, None))[0])
        return consumer  # checked before the first record is applied (see run_forever)

    async def _verify_log(self, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, tuple[int, str | None]]) -> bool:
        """Start a partition again from the beginning if the broker no longer holds the log we read.

        The embedded broker forgets everything when it restarts and then
        reuses offsets, so an offset alone cannot tell; the fingerprint of the
        last record read can (see :func:`_lost`). Per-person versions make
        the replay harmless. Every partition ends up at a position this check
        chose, so records fetched before it must be fetched again. Returns
        whether the broker's answers proved every partition either way.
        """
        proven = True
        for tp, (position, expected) in positions.items():
            if position == 0:
                consumer.seek(tp, 0)
                continue
            lost = await _lost(consumer, tp, position - 1, expected)
            if lost:  # ask twice before reading everything again: a busy broker answers oddly once
                await asyncio.sleep(0.5)
                lost = await _lost(consumer, tp, position - 1, expected)
            if lost:
                log.warning("%s: the broker no longer holds what was read from %s up to offset %s (restarted empty); reading it again from the beginning", self._name, tp, position)
                await self._forget_position(tp)
                consumer.seek(tp, 0)
            else:
                proven = proven and lost is not None
                consumer.seek(tp, position)
        return proven

    async def _forget_position(self, tp: TopicPartition) -> None:
        """Nothing of the new log was read yet: a later check starts from there, not from the lost log."""
        async with self._sessions() as session, session.begin():
            await session.execute(update(self._offsets).where(self._offsets.topic == tp.topic, self._offsets.partition == tp.partition).values(next_offset=0, fingerprint=None))

    @staticmethod
    async def _log_shorter_than_read(consumer: AIOKafkaConsumer) -> bool:
        """Whether a fetch showed a log that ends before what was already read from it.

        That happens only when the broker came back without its log; the
        consumer would otherwise wait at its old position until the new log
        outgrew it, and then skip the records below.
        """
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None and highwater < await consumer.position(tp):
                return True
        return False

    def _check_partitions(self, consumer: AIOKafkaConsumer) -> None:
        """A topic created anew with other partitions than those assigned: start again with all of them."""
        partitions = consumer.partitions_for_topic(self._topic)
        if partitions and partitions != {tp.partition for tp in consumer.assignment()}:
            raise _PartitionsChanged(f"{self._topic} now has partitions {sorted(partitions)}")

    async def _current_positions(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, tuple[int, str | None]]:
        stored = await self._positions()
        return {tp: stored.get(tp.partition, (0, None)) for tp in consumer.assignment()}

    def _span(self, record: ConsumerRecord):
        return consume_span(record, consumer=self._name)

    def _batch_span(self, records: list[ConsumerRecord]):
        """One span for records taken together, linked to the trace each record came in (a batch handler may
        still take each record in its own :func:`consume_span`)."""
        return tracer().start_as_current_span(
            f"consume {records[0].topic} batch of {len(records)}", kind=trace.SpanKind.CONSUMER, links=links_to(context_from_kafka_headers(r.headers) for r in records),
            attributes={"messaging.system": "kafka", "messaging.source.name": records[0].topic, "messaging.kafka.offset": records[0].offset,
                        "messaging.batch.message_count": len(records), "jukinet.consumer": self._name},
        )

    async def _take_receipts(self, session: AsyncSession, signed: list[SignedBy]) -> None:
        """Keep the message ids of records about to be applied; one already kept is a replay (the transaction is refused)."""
        taken = (await session.execute(self._take_receipts_statement, {
            "ids": [str(s.message_id) for s in signed], "signers": [s.key_id for s in signed], "times": [s.signed_at for s in signed],
        })).scalars().all()
        if len(taken) < len(signed):
            replayed = sorted({str(s.message_id) for s in signed} - {str(t) for t in taken})
            raise UntrustedRecord("replayed", f"message {', '.join(replayed[:3])} was taken before: a replay")

    async def _prune_receipts(self) -> None:
        """Receipts older than the acceptance window: a replay of such a record is refused by its age."""
        now = time.monotonic()
        if now - self._receipts_pruned_at < PRUNE_RECEIPTS_EVERY_SECONDS:
            return
        self._receipts_pruned_at = now
        async with self._sessions() as session, session.begin():
            await session.execute(delete(self._receipts).where(self._receipts.signed_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, self._gate.max_age_seconds)))

    async def _apply(self, record: ConsumerRecord) -> None:
        with self._span(record):
            try:
                signed = self._gate.admit(record)
                async with self._sessions() as session, session.begin():
                    await self._take_receipts(session, [signed])
                    await self._handler(session, record)
                    await self._store_offset(session, record)
            except _REFUSALS as exc:
                await self._dead_letter(record, _refusal_reason(exc)[:4000])
                metrics.count_refusal(channel="kafka", reason=_refusal_kind(exc))

    async def _apply_batch(self, records: list[ConsumerRecord]) -> None:
        """Records of one partition in one transaction with the last offset; if any
        is refused, the batch is rolled back and taken one record at a time, so a
        refused record goes to the dead letters and the others are applied."""
        if len(records) == 1:
            await self._apply(records[0])
            return
        try:
            signed = [self._gate.admit(record) for record in records]
            async with self._sessions() as session, session.begin():
                await self._take_receipts(session, signed)
                if self._batch_handler is not None:
                    with self._batch_span(records):
                        await self._batch_handler(session, records)
                else:
                    for record in records:
                        with self._span(record):
                            await self._handler(session, record)
                await self._store_offset(session, records[-1])
        except _REFUSALS:
            for record in records:
                await self._apply(record)

    async def _store_offset(self, session: AsyncSession, record: ConsumerRecord) -> None:
        """Move the stored position past ``record``: an UPDATE (a cached statement), and the
        first time for a partition an upsert (the dialect's INSERT … ON CONFLICT is never cached)."""
        mark = fingerprint(record)
        moved = await session.execute(
            _offset_update(self._offsets), {"at_topic": record.topic, "at_partition": record.partition, "next": record.offset + 1, "mark": mark},
        )
        if moved.rowcount == 0:
            stmt = insert(self._offsets).values(topic=record.topic, partition=record.partition, next_offset=record.offset + 1, fingerprint=mark)
            await session.execute(stmt.on_conflict_do_update(index_elements=["topic", "partition"], set_={"next_offset": record.offset + 1, "fingerprint": mark, "updated_at": func.now()}))

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        """Refused records go to the dead-letter topic and this service's own table; never dropped."""
        log.warning("%s refused %s/%s@%s: %s", self._name, record.topic, record.partition, record.offset, reason)
        payload = (record.value or b"").decode("utf-8", errors="replace")
        await self._producer.send(
            topics.DEAD_LETTER, key=(record.key or b"").decode("utf-8", errors="replace") or "-", value=record.value or b"",
            headers={topics.HEADER_REFUSAL_REASON: reason[:1000], topics.HEADER_SOURCE_TOPIC: record.topic, "jukinet-refused-by": self._name},
        )
        async with self._sessions() as session, session.begin():
            session.add(self._dead(topic=record.topic, partition=record.partition, offset=record.offset, reason=reason, payload=payload[:100000]))
            await self._store_offset(session, record)

    async def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is not None:
                self.lag[(tp.topic, tp.partition)] = max(0, end - await consumer.position(tp))

    async def run_forever(self) -> None:
        """Apply records as they come; check the broker still holds the log read so far.

        A broker restarted empty reuses offsets: once its new log has outgrown
        a consumer's position, the records below that position would be
        skipped and the last record read would seem to match. So fetched
        records are applied only after a check whenever the consumer's
        connections to the broker changed since the last check (a restart
        closes them), a fetch showed a log shorter than what was read, the
        last check proved nothing (the broker was away, or the consumer just
        started), or ``VERIFY_EVERY_SECONDS`` passed. Records fetched before a check are
        dropped and fetched again from the position it chose.
        """
        while True:
            consumer = None
            try:
                consumer = await self._start_consumer()
                verified_at, unproven, connections = time.monotonic(), True, _connections(consumer)
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=200)
                    if (unproven or time.monotonic() - verified_at > VERIFY_EVERY_SECONDS or await self._log_shorter_than_read(consumer)
                            or (batches and _connections(consumer) != connections)):
                        self._check_partitions(consumer)
                        connections = _connections(consumer)
                        unproven = not await self._verify_log(consumer, await self._current_positions(consumer))
                        verified_at = time.monotonic()
                        continue
                    for _tp, records in batches.items():
                        await self._apply_batch(records)
                        self.applied += len(records)
                    await self._measure_lag(consumer)
                    await self._prune_receipts()
            except asyncio.CancelledError:
                raise
            except (KafkaError, _PartitionsChanged) as exc:
                log.warning("%s: broker problem (%s); reconnecting", self._name, exc)
            except Exception:
                log.exception("%s: consumer failed; restarting it", self._name)
            finally:
                if consumer is not None:
                    try:
                        await consumer.stop()
                    except Exception:
                        pass
            await asyncio.sleep(1.0)


def _connections(consumer: AIOKafkaConsumer) -> list[object]:
    """The consumer's open connections to the broker (aiokafka's own list; the version is pinned).

    The list holds the connection objects themselves, so comparing two
    lists by identity tells a reconnect: a broker that restarted closed
    every connection, and the client opened new ones.
    """
    return list(consumer._client._conns.values())  # noqa: SLF001


_REFUSALS = (UntrustedRecord, Refuse, ValidationError, UnicodeDecodeError, ValueError)


def _refusal_reason(exc: Exception) -> str:
    """The reason a dead letter carries."""
    if isinstance(exc, UntrustedRecord):
        return f"untrusted record ({exc.kind}): {exc}"
    return f"{type(exc).__name__}: {exc}"


def _refusal_kind(exc: Exception) -> str:
    """A short label for the metrics: why a record was dead-lettered (``untrusted-*``: its producer is not proven or not entitled)."""
    if isinstance(exc, UntrustedRecord):
        return f"untrusted-{exc.kind}"
    if isinstance(exc, Refuse):
        return "refused-by-rule"
    if isinstance(exc, ValidationError):
        return "invalid-contract"
    if isinstance(exc, UnicodeDecodeError):
        return "not-utf8"
    return "invalid-value"
