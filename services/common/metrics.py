"""OpenTelemetry metrics of one service process, exposed for Prometheus at ``/metrics``.

Instruments (names as Prometheus shows them):

- ``jukinet_outbox_backlog`` — unsent outbox rows (gauge, read at scrape time);
- ``jukinet_consumer_lag`` — log end offset minus this consumer's position,
  per topic and partition (gauge);
- ``jukinet_refusals_total`` — refused HTTP requests and dead-lettered Kafka
  records, by channel and reason (counter);
- ``jukinet_provisions_total`` — persons provided to agencies, by affair and
  provider (counter);
- ``http_server_duration_milliseconds`` (or its newer semantic-convention
  name) — request latencies, from the FastAPI instrumentation.

Outbox relays and consumers register themselves here when they are created;
the gauges read them when Prometheus (or ``cli status``) scrapes. Before
:func:`setup_metrics` runs (unit tests, tools) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from opentelemetry import metrics

log = logging.getLogger(__name__)

METER = "jukinet"


@dataclass
class _Watched:
    """What this process exposes: its outbox relays and consumers, and the last values read."""

    outboxes: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
    backlog: dict[str, int] = field(default_factory=dict)


_watched = _Watched()


def watch_outbox(relay) -> None:
    """Called by an outbox relay when it is created; its backlog becomes a gauge."""
    _watched.outboxes.append(relay)


def watch_consumer(consumer) -> None:
    """Called by a stored-offset consumer when it is created; its lag becomes a gauge."""
    _watched.consumers.append(consumer)


def outboxes() -> list:
    return list(_watched.outboxes)


def consumers() -> list:
    return list(_watched.consumers)


@lru_cache(maxsize=1)
def _instruments():
    meter = metrics.get_meter(METER)
    return {
        "refusals": meter.create_counter("jukinet.refusals", description="Refused HTTP requests and dead-lettered Kafka records, by channel and reason"),
        "provisions": meter.create_counter("jukinet.provisions", description="Persons provided to agencies, by affair and provider"),
    }


def count_refusal(*, channel: str, reason: str) -> None:
    """One refused request (channel ``http``) or dead-lettered record (channel ``kafka``)."""
    _instruments()["refusals"].add(1, {"channel": channel, "reason": reason[:64]})


def count_provisions(*, affair: str, provider: str, persons: int) -> None:
    """Persons provided for one query (0 is not counted: nothing left)."""
    if persons:
        _instruments()["provisions"].add(persons, {"affair": affair, "provider": provider})


def _observe_backlog(_options) -> Iterable[metrics.Observation]:
    return [metrics.Observation(count, {"outbox": name}) for name, count in _watched.backlog.items()]


def _observe_lag(_options) -> Iterable[metrics.Observation]:
    out = []
    for consumer in _watched.consumers:
        for (topic, partition), lag in dict(getattr(consumer, "lag", {})).items():
            out.append(metrics.Observation(lag, {"topic": topic, "partition": str(partition)}))
    return out


async def refresh() -> None:
    """Read the values the gauges report (outbox backlog needs the database)."""
    for relay in outboxes():
        try:
            _watched.backlog[relay.name] = await asyncio.wait_for(relay.backlog(), timeout=5.0)
        except Exception as exc:  # a scrape must not fail because the database is slow or down
            log.warning("could not read the backlog of %s: %s", relay.name, exc)


def setup_metrics(service_name: str):
    """Install a MeterProvider whose reader is the Prometheus exporter; returns the provider."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    provider = MeterProvider(resource=Resource.create({"service.name": service_name}), metric_readers=[PrometheusMetricReader()])
    metrics.set_meter_provider(provider)
    meter = metrics.get_meter(METER)
    meter.create_observable_gauge("jukinet.outbox.backlog", callbacks=[_observe_backlog], description="Outbox rows not yet delivered")
    meter.create_observable_gauge("jukinet.consumer.lag", callbacks=[_observe_lag], description="Records on the broker this consumer has not applied yet")
    return provider


def exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
