"""``celery_task_sent_total``: tasks published, counted where they are published.

A send happens in the producer (the web app, beat, a worker publishing a retry or a workflow
step), which serves no ``/metrics`` of its own. The popular exporter learns of sends from
``task-sent`` events, one broker message per send. Here each producer counts its sends in memory
and adds them to one Redis hash (``SENT_KEY``) in a single round trip at most once per
FLUSH_EVERY_S, from a timer, and once more at exit; every worker exports the hash at scrape
time. So a publish costs a dict increment, not a round trip, and the counts survive restarts of
producers and workers alike. Like ``celery_queue_length``, the series are global: every worker
exports the same ones, so aggregate them with ``max``, not ``sum``.

Counts not yet added when a producer is killed with SIGKILL (at most FLUSH_EVERY_S of sends) are
lost; a Redis outage keeps them in memory until the next flush succeeds.

Each app has one counter (``app.sent_counter``), made on its first publish and talking to the
app's broker through the shared client of redis_clients.py.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import cast

import redis
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from personal_assistant.workers import keys
from personal_assistant.workers.metrics.series import LABELS
from personal_assistant.workers.redis_clients import client_for

logger = logging.getLogger(__name__)

SENT_KEY = keys.METRICS_SENT_KEY
# Sends reach Redis at most this late; a busy producer pays one round trip per second.
FLUSH_EVERY_S = 1.0


class SentCounter:
    """Counts this process's sends per (task name, queue) and adds them to Redis in batches."""

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        hostname: str | None = None,
        flush_every: float = FLUSH_EVERY_S,
    ) -> None:
        self._client = client
        self.hostname = hostname or socket.gethostname()
        self.flush_every = flush_every
        self._pending: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._failing = False
        # A forked child (a pool process) starts with a copy of the parent's pending counts:
        # they are the parent's to add, so the child starts from nothing.
        os.register_at_fork(after_in_child=self._forget_inherited)
        atexit.register(self.flush)

    def count(self, task_name: str, queue: str) -> None:
        """One task published to ``queue``; added to Redis within ``flush_every``."""
        with self._lock:
            key = (task_name, queue)
            self._pending[key] = self._pending.get(key, 0) + 1
            if self._timer is None:
                self._timer = threading.Timer(self.flush_every, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Add every pending count to Redis now (kept for the next try if Redis fails)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not pending:
            return
        try:
            with self._client().pipeline(transaction=False) as batch:
                for (name, queue), sent in pending.items():
                    batch.hincrby(SENT_KEY, json.dumps([name, self.hostname, queue]), sent)
                batch.execute()
        except redis.RedisError:
            if not self._failing:
                logger.warning("could not add sent-task counts to Redis; kept for later")
            self._failing = True
            with self._lock:
                for key, sent in pending.items():
                    self._pending[key] = self._pending.get(key, 0) + sent
            return
        self._failing = False

    def _forget_inherited(self) -> None:
        self._pending = {}
        self._lock = threading.Lock()
        self._timer = None


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
