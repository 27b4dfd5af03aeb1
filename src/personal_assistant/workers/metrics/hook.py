"""Wires metrics, liveness and the health endpoints into the worker (METRICS_ENABLED).

In the worker's main process: a TaskMetricsRecorder fed by the request class (request.py),
installed as ``app.metrics_recorder`` (where the request class and alerting find it), a
heartbeat (from which beat exports ``celery_worker_up``), and the HTTP server on
METRICS_HOST:METRICS_PORT serving ``/metrics`` (this worker's own series only: the cluster-wide
ones are beat's, metrics/cluster_series.py), ``/healthz`` and ``/readyz``. In pool children:
nothing (they do not record; the parent sees every outcome), and they close their copy of the
server's socket. In producers: a publish timestamp in each message's headers, from which the
worker measures queue wait. A port that cannot be bound (METRICS_PORT in use) stops the worker
with one line, exit 78, before its heartbeat: a worker whose /healthz port answers for another
process would be reported healthy or scraped as that one.

With METRICS_ENABLED=false none of this is registered: no hook, no request class, no events.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from personal_assistant.workers.config import is_redis_url
from personal_assistant.workers.hooks.registry import WorkerHook
from personal_assistant.workers.hooks.startup import EX_CONFIG, refuse_start
from personal_assistant.workers.metrics.cluster_series import exporter_hostname
from personal_assistant.workers.metrics.recorder import TaskMetricsRecorder
from personal_assistant.workers.metrics.request import PUBLISHED_AT_HEADER
from personal_assistant.workers.metrics.snapshots import write_snapshot
from personal_assistant.workers.monitoring.domain_readiness import domains_ready
from personal_assistant.workers.monitoring.health_check import (
    HealthServer,
    backend_ready,
    broker_ready,
)
from personal_assistant.workers.monitoring.liveness import (
    Heartbeat,
    WorkerRegistry,
)
from personal_assistant.workers.redis_clients import client_for

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

logger = logging.getLogger(__name__)

# Per task, from the collector's summary, into each snapshot.
SNAPSHOT_FIELDS = ("count", "failed", "p95", "avg_time", "avg_cpu_time", "max_memory")

# /healthz fails when the worker's event loop has not moved for this long: a hung consumer.
LOOP_STALL_AFTER_S = 60.0
LOOP_TICK_S = 5.0
# Task summaries for `pa-status`: rates are deltas between two snapshots, 10 s apart.
SNAPSHOT_EVERY_S = 10.0


class PublishTimestampHook(WorkerHook):
    """Stamps each published task with its publish time (for queue-wait metrics)."""

    name = "publish-timestamp"

    def before_task_publish(
        self,
        *,
        task_name: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        routing_key: str,
    ) -> None:
        """Stamp the publish time; a retry is a new publish, and its countdown is excluded."""
        headers[PUBLISHED_AT_HEADER] = time.time()


class SentCountHook(WorkerHook):
    """Counts each published task for ``celery_task_sent_total`` in the app's sent counter."""

    name = "sent-count"

    def __init__(self, app: WorkerApp) -> None:
        self.app = app

    def after_task_publish(
        self, *, task_name: str, headers: dict[str, Any], routing_key: str
    ) -> None:
        """Count the send (added to Redis in batches, at most a second later)."""
        self.app.sent_counter.count(task_name or str(headers.get("task", "")), routing_key)

    def on_worker_process_shutdown(self) -> None:
        """A pool child exits without running atexit handlers: add its counts first (the
        sends, and the domain counts of the tasks it ran)."""
        self.app.sent_counter.flush()
        self.app.domain_metrics.flush()


class MetricsHook(WorkerHook):
    """Starts the recorder, heartbeat and HTTP endpoints in the worker's main process.

    The recorder is installed as ``app.metrics_recorder`` for the app's request class and the
    hooks that listen to it (alerting, which ``requires`` this hook).
    """

    name = "metrics"

    def __init__(self, app: WorkerApp) -> None:
        self.app = app
        self.server: HealthServer | None = None
        self.heartbeat: Heartbeat | None = None
        self._client: redis.Redis | None = None

    def on_worker_init(self, *, sender: Any) -> None:
        """Main process, before the pool forks: set up everything the children must not run."""
        settings = self.app.settings
        hostname = exporter_hostname(str(getattr(sender, "hostname", "") or "worker"))
        # The worker's own limit: the command line's, else worker_max_tasks_per_child.
        recorder = TaskMetricsRecorder(
            hostname, max_tasks_per_child=getattr(sender, "max_tasks_per_child", None)
        )
        self.app.metrics_recorder = recorder
        broker_url = str(self.app.conf.broker_url)
        queues = list(getattr(sender, "queues", None) or settings.worker_queue)
        backend_url = str(self.app.conf.result_backend)
        self.server = HealthServer(
            settings.metrics_port,
            registry=recorder.registry,
            liveness=self._liveness,
            readiness=lambda: _all(
                broker_ready(broker_url),
                backend_ready(backend_url),
                domains_ready(settings, queues),
            ),
            host=settings.metrics_host,
        )
        try:
            port = self.server.start()
        except OSError as exc:
            # Stop, not run on unseen: the port answers for another process, so /healthz probes
            # and scrapes meant for this worker would report that one. Before the heartbeat,
            # so a refused worker leaves no trace in the registry.
            refuse_start(f"worker {hostname} not started: {exc.strerror or exc}", EX_CONFIG)
        if is_redis_url(broker_url):
            client = self._client = client_for(broker_url)
            # The cluster-wide series (queue depth, every worker's up, sends, beat's tick, the
            # domain counters) are beat's to export (metrics/cluster_series.py): from every
            # worker, a dashboard's `sum` would count them once per worker.
            registry = WorkerRegistry(client, down_after=settings.worker_down_after)
            self.heartbeat = Heartbeat(
                registry, hostname, queues, interval=settings.worker_heartbeat_interval
            )
            self.heartbeat.start()
        logger.info(
            "metrics and health on %s port %d (/metrics, /healthz, /readyz)",
            settings.metrics_host,
            port,
        )

    def on_worker_ready(self, *, sender: Any) -> None:
        """Tick from the worker's own event loop, so /healthz sees a hung consumer; publish
        task summaries for ``celery ... pa-status`` from the same loop."""
        loop = getattr(sender, "hub", None)  # worker_ready's sender is the consumer
        if self.heartbeat is not None:
            self.heartbeat.touch()
            if loop is not None:
                loop.call_repeatedly(LOOP_TICK_S, self.heartbeat.touch)
                loop.call_repeatedly(SNAPSHOT_EVERY_S, self._write_snapshot)

    def _write_snapshot(self) -> None:
        recorder = self.app.metrics_recorder
        if recorder is None or self._client is None:
            return
        recorder.settle()
        summary = recorder.collector.get_performance_summary()
        # What pa-status shows (count, failed, p95) and what `tune` models queues from (mean
        # run and CPU time, peak RSS).
        tasks = {name: {key: s[key] for key in SNAPSHOT_FIELDS} for name, s in summary.items()}
        try:
            write_snapshot(self._client, recorder.hostname, tasks)
        except redis.RedisError:
            logger.warning("could not write the task snapshot", exc_info=True)

    def on_message_rejected(
        self, *, reason: str, task_name: str, queue: str, task_id: str | None
    ) -> None:
        """Count a message the worker dead-lettered without running it."""
        recorder = self.app.metrics_recorder
        if recorder is not None:
            series = recorder.series(task_name, queue)
            series.rejected[reason] = series.rejected.get(reason, 0) + 1

    def on_worker_process_init(self) -> None:
        """A pool child: it records nothing (the parent does) and serves nothing.

        The fork copied the server's listening socket: closed here, or a child outliving the
        parent would keep the port bound (the next worker could not start) and its backlog
        would take connections that no one answers.
        """
        self.app.metrics_recorder = None
        if self.server is not None:
            self.server.close_in_child()
            self.server = None

    def on_worker_shutdown(self, *, sender: Any) -> None:
        """Stop serving and beating; a clean stop is not a worker going down."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
            try:
                self.heartbeat.registry.forget(self.heartbeat.hostname)
            except redis.RedisError:
                logger.warning("could not mark %s stopped", self.heartbeat.hostname)
        if self.server is not None:
            self.server.stop()
        recorder = self.app.metrics_recorder
        if recorder is not None:
            recorder.settle()
            recorder.usage.close()
        self.app.metrics_recorder = None

    def _liveness(self) -> tuple[bool, str]:
        if self.heartbeat is None:
            return True, "ok"
        return self.heartbeat.health(LOOP_STALL_AFTER_S)


def _all(*checks: tuple[bool, str]) -> tuple[bool, str]:
    ok = all(passed for passed, _ in checks)
    return ok, "; ".join(message for _, message in checks if message)
