"""Beat's /metrics, /healthz and /readyz: the cluster-wide series, its entries, the lock holder.

Served by every beat on ``BEAT_METRICS_PORT`` (0: not served), with the health server the
workers use. The holder exports the cluster-wide series (queue depth, workers up, sends, beat's
tick, the domain counters: metrics/cluster_series.py), once for the cluster. Its own series:

- ``pa_beat_lock_held{owner}``: 1 on the beat that holds the lock, 0 on a standby; ``sum`` over
  beats is 1 when one beat sends, 0 when none does (alert on that), 2 never.
- ``pa_beat_entries{state}``: entries ``enabled``, ``disabled`` and ``invalid`` (rejected at
  load: the log names them, ``celery ... schedule list`` says why).
- per entry: ``pa_beat_entry_runs_total``, ``pa_beat_entry_skips_total{reason}``,
  ``pa_beat_entry_last_run_timestamp_seconds``, ``pa_beat_entry_next_run_timestamp_seconds``.

The entry series are read from Redis at scrape time and exported by the lock holder only:
every beat would read the same values, and the ``sum`` dashboards take would multiply them by
the number of beats. /healthz fails when this beat has not ticked for a lock timeout (a hung
loop); /readyz when it cannot reach Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import redis
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from personal_assistant.workers.metrics.cluster_series import cluster_collectors
from personal_assistant.workers.monitoring.health_server import HealthServer
from personal_assistant.workers.schedulers.beat_catalogue import Catalogue
from personal_assistant.workers.schedulers.beat_report import entry_rows
from personal_assistant.workers.schedulers.beat_timing import SKIP_REASONS

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)


class ExportedBeat(Protocol):
    """What the exports read of a beat (an ExportedBeat; a protocol, so the scheduler
    that starts the exports is not imported by them)."""

    app: Any
    owner: str
    token: int | None
    client: redis.Redis
    catalogue: Catalogue
    lock_timeout: float
    last_tick_monotonic: float
    redis_failing: bool


class HolderOnly(Collector):
    """Another collector's series, exported only while this beat holds the lock."""

    def __init__(self, beat: ExportedBeat, inner: Collector) -> None:
        self.beat = beat
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        """The inner collector's series on the holder; nothing on a standby."""
        if self.beat.token is not None:
            yield from self.inner.collect()


class BeatCollector(Collector):
    """The beat series of one scheduler, computed at scrape time."""

    def __init__(self, scheduler: ExportedBeat) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        """Yield the lock gauge, and the entry series when this beat holds the lock."""
        scheduler = self.scheduler
        held = GaugeMetricFamily(
            "pa_beat_lock_held", "1 on the beat that holds the lock and sends", labels=["owner"]
        )
        held.add_metric([scheduler.owner], 1.0 if scheduler.token is not None else 0.0)
        yield held
        if scheduler.token is None:
            return
        try:
            rows = entry_rows(scheduler.client, scheduler.catalogue)
        except redis.RedisError as exc:
            logger.warning("beat metrics: cannot read the entries' state (%s)", exc)
            return
        states = GaugeMetricFamily("pa_beat_entries", "Beat entries by state", labels=["state"])
        for state in ("enabled", "disabled", "invalid"):
            states.add_metric([state], float(sum(row.state == state for row in rows)))
        yield states
        runs = CounterMetricFamily(
            "pa_beat_entry_runs", "Runs sent per beat entry", labels=["entry"]
        )
        skips = CounterMetricFamily(
            "pa_beat_entry_skips", "Times skipped per beat entry", labels=["entry", "reason"]
        )
        last = GaugeMetricFamily(
            "pa_beat_entry_last_run_timestamp_seconds",
            "When the entry's last run was due",
            labels=["entry"],
        )
        following = GaugeMetricFamily(
            "pa_beat_entry_next_run_timestamp_seconds",
            "When the entry's next run is sent",
            labels=["entry"],
        )
        for row in rows:
            if row.state == "invalid":
                continue
            runs.add_metric([row.name], float(row.run_count))
            for reason in SKIP_REASONS:
                skips.add_metric([row.name, reason], float(row.skips.get(reason, 0)))
            if row.last_run is not None:
                last.add_metric([row.name], row.last_run)
            if row.next_run is not None:
                following.add_metric([row.name], row.next_run)
        yield from (runs, skips, last, following)


def start_beat_exports(scheduler: ExportedBeat) -> HealthServer | None:
    """Serve beat's /metrics and health on BEAT_METRICS_HOST... (``METRICS_HOST`` and
    ``BEAT_METRICS_PORT``); None when the port is 0 or cannot be bound (logged: beat runs on)."""
    settings = scheduler.app.settings
    if not settings.beat_metrics_port:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BeatCollector(scheduler))
    for collector in cluster_collectors(scheduler.client, down_after=settings.worker_down_after):
        registry.register(HolderOnly(scheduler, collector))
    server = HealthServer(
        settings.beat_metrics_port,
        registry=registry,
        liveness=lambda: _ticking(scheduler),
        readiness=lambda: _reaching(scheduler),
        host=settings.metrics_host,
    )
    try:
        port = server.start()
    except OSError as exc:
        logger.warning("beat metrics not served: %s (set BEAT_METRICS_PORT)", exc)
        return None
    logger.info("beat metrics and health on %s port %d", settings.metrics_host, port)
    return server


def _ticking(scheduler: ExportedBeat) -> tuple[bool, str]:
    age = time.monotonic() - scheduler.last_tick_monotonic
    if age > scheduler.lock_timeout:
        return False, f"beat has not ticked for {age:.0f} s"
    return True, ""


def _reaching(scheduler: ExportedBeat) -> tuple[bool, str]:
    if scheduler.redis_failing:
        return False, "beat cannot reach Redis"
    return True, ""
