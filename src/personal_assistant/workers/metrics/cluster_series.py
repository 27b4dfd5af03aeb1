"""The cluster-wide series, exported from one place: the beat that holds the lock.

Queue depth, every worker's liveness, the sends counted by every producer, beat's last tick
and the domain counters (e-mail, calendar, AI) are the same whichever process reads them from
Redis. Exported by every worker, as they were, the community dashboards' and alert rules'
``sum`` turned N workers into N times the queue depth and N² workers up. Beat is one process
(one holds the lock, schedulers/beat_lock.py), so its /metrics carries them once; a standby
beat exports none (schedulers/beat_exports.py), so two beats do not double them either.

Names and labels are the popular Celery exporter's (celery_queue_length{queue_name},
celery_worker_up{hostname}, celery_task_sent_total{name,hostname,queue_name}), served on port
9808 by the beat container, so its dashboards and alerts work unchanged. ``hostname`` is the
worker's node name with a leading ``celery@`` stripped, as the exporter does. Where the names
differ from the exporter's: celery_beat_last_tick_timestamp_seconds and the pa_* families are
this project's own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.metrics.domain_counters import DomainCollector
from personal_assistant.workers.metrics.recorder import QueueLengthCollector
from personal_assistant.workers.metrics.sent_counter import SentCollector
from personal_assistant.workers.monitoring.liveness import BeatLiveness, WorkerRegistry
from personal_assistant.workers.monitoring.queue_depth import queue_depths

logger = logging.getLogger(__name__)

# What the Celery exporter strips from node names before using them as `hostname`.
EXPORTER_NODE_PREFIX = "celery@"


def exporter_hostname(node: str) -> str:
    """A worker's node name as the exporter labels it (``celery@web-1`` -> ``web-1``)."""
    return node.removeprefix(EXPORTER_NODE_PREFIX)


class WorkerUpCollector(Collector):
    """``celery_worker_up{hostname}`` for every worker seen in the last day (0 once silent)."""

    def __init__(self, registry: WorkerRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """One sample per worker the registry knows."""
        family = GaugeMetricFamily(
            "celery_worker_up", "1 while the worker sends heartbeats", labels=["hostname"]
        )
        try:
            workers = self._registry.workers()
        except Exception:
            logger.warning("worker liveness unavailable", exc_info=True)
            workers = []
        for worker in workers:
            family.add_metric([exporter_hostname(worker.hostname)], 1.0 if worker.up else 0.0)
        yield family


class BeatTickCollector(Collector):
    """``celery_beat_last_tick_timestamp_seconds``: when beat last looped (absent if never)."""

    def __init__(self, liveness: BeatLiveness) -> None:
        self._liveness = liveness

    def collect(self) -> Iterator[Metric]:
        """The last tick any beat recorded."""
        family = GaugeMetricFamily(
            "celery_beat_last_tick_timestamp_seconds", "Unix time of beat's last scheduler loop"
        )
        try:
            last = self._liveness.last_tick()
        except Exception:
            logger.warning("beat liveness unavailable", exc_info=True)
            last = None
        if last is not None:
            family.add_metric([], last)
        yield family


class BacklogCollector(Collector):
    """``pa_workflows_running`` (workflows not yet ended) and ``pa_dead_letters`` (entries in
    the dead-letter queue), read at scrape time in one round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        """Both gauges; none when Redis cannot be read (a gap, not a false zero)."""
        running = GaugeMetricFamily("pa_workflows_running", "Workflows submitted and not ended")
        dead = GaugeMetricFamily("pa_dead_letters", "Entries in the dead-letter queue")
        try:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.scard(keys.WORKFLOWS_OPEN_KEY)
                pipe.zcard(keys.DLQ_INDEX_KEY)
                open_count, dlq_count = pipe.execute()
        except redis.RedisError:
            logger.warning("workflow and dead-letter counts unavailable", exc_info=True)
        else:
            running.add_metric([], float(open_count))
            dead.add_metric([], float(dlq_count))
        yield running
        yield dead


def cluster_collectors(client: redis.Redis, *, down_after: float) -> list[Collector]:
    """The collectors of every cluster-wide series, reading the broker's Redis at scrape time."""
    return [
        QueueLengthCollector(lambda: queue_depths(client, list(c.QUEUES))),
        WorkerUpCollector(WorkerRegistry(client, down_after=down_after)),
        SentCollector(client),
        DomainCollector(client),
        BeatTickCollector(BeatLiveness(client)),
        BacklogCollector(client),
    ]
