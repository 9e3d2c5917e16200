"""A producer that stays quiet still learns that the broker restarted without its log.

Only the embedded broker runs here (it keeps nothing when it stops). The
producer sends a few records, the broker is killed and started empty, and the
producer sends nothing more: its periodic check of the last record of each
partition must announce every topic it wrote to, so its outbox relays send
again what the broker forgot (``OutboxRelay.resend_after_log_reset``).
"""

from __future__ import annotations

import asyncio
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
