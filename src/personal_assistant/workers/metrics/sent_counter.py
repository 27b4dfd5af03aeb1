"""``celery_task_sent_total``: tasks published, counted where they are published.

A send happens in the producer (the web app, beat, a worker publishing a retry or a workflow
step), which serves no ``/metrics`` of its own. The popular exporter learns of sends from
``task-sent`` events, one broker message per send. Here each producer counts its sends in memory
and adds them to one Redis hash (``SENT_KEY``) in a single round trip at most once per
FLUSH_EVERY_S (hash_counter.py); every worker exports the hash at scrape time. So a publish
costs a dict increment, not a round trip, and the counts survive restarts of producers and
workers alike. Like ``celery_queue_length``, the series are global: every worker
exports the same ones, so aggregate them with ``max``, not ``sum``.

Counts not yet added when a producer is killed with SIGKILL (at most FLUSH_EVERY_S of sends) are
lost; a Redis outage keeps them in memory until the next flush succeeds.

Each app has one counter (``app.sent_counter``), made on its first publish and talking to the
app's broker through the shared client of redis_clients.py.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import cast

import redis
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from personal_assistant.workers import keys
from personal_assistant.workers.metrics.hash_counter import FLUSH_EVERY_S, RedisHashCounter
from personal_assistant.workers.metrics.series import LABELS
from personal_assistant.workers.redis_clients import client_for

logger = logging.getLogger(__name__)

SENT_KEY = keys.METRICS_SENT_KEY


class SentCounter(RedisHashCounter):
    """Counts this process's sends per (task name, queue) and adds them to Redis in batches."""

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        hostname: str | None = None,
        flush_every: float = FLUSH_EVERY_S,
    ) -> None:
        super().__init__(SENT_KEY, client, flush_every)
        self.hostname = hostname or socket.gethostname()

    def count(self, task_name: str, queue: str) -> None:
        """One task published to ``queue``; added to Redis within ``flush_every``."""
        self.add(json.dumps([task_name, self.hostname, queue]))


def read_sent(client: redis.Redis) -> dict[tuple[str, str, str], int]:
    """Every (name, hostname, queue) series and its total sends, from Redis."""
    raw = cast(dict[bytes, bytes], client.hgetall(SENT_KEY))
    out: dict[tuple[str, str, str], int] = {}
    for field, value in raw.items():
        try:
            name, hostname, queue = json.loads(field)
        except (ValueError, TypeError):
            continue  # not ours: never break a scrape over one field
        out[(str(name), str(hostname), str(queue))] = int(value)
    return out


class SentCollector(Collector):
    """Exposes ``celery_task_sent_total`` from Redis at scrape time."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def describe(self) -> Iterator[Metric]:
        """The family, without samples (the registry checks names on register)."""
        yield CounterMetricFamily("celery_task_sent", "Tasks published", labels=LABELS)

    def collect(self) -> Iterator[Metric]:
        """The totals of every producer, read now."""
        family = CounterMetricFamily("celery_task_sent", "Tasks published", labels=LABELS)
        try:
            sent = read_sent(self._client)
        except redis.RedisError:
            logger.warning("sent-task counts unavailable", exc_info=True)
            sent = {}
        for labels, total in sorted(sent.items()):
            family.add_metric(labels, total)
        yield family


def counter_for_broker(broker_url: str) -> SentCounter:
    """A counter adding to the Redis at ``broker_url``, through that URL's shared client."""
    return SentCounter(lambda: client_for(broker_url))
