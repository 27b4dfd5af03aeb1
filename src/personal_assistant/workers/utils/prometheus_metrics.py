"""Task metrics that stay true under the prefork pool, in the names people's dashboards use.

Where the numbers come from: Celery's worker *main* process already learns every outcome of
every task, whichever child runs it: it receives the message, is told when a child accepts it,
gets the result (or the runtime and exception) back through the pool, and notices a child that
died (WorkerLostError). It reports each of these as a task event (task-received, -started,
-succeeded, -failed, -retried, -rejected, -revoked), the events Flower and the popular exporter
consume over the broker at a quarter of the throughput. Here the request class records them
straight into a Prometheus registry in that main process, with task events left off (no event
is built, nothing reaches the broker). So:

- no per-child HTTP servers (each of which would export about 1/N of the truth);
- no multiprocess files (one per dead child, making scrapes take seconds under churn);
- a child killed with SIGKILL is seen by the parent, which counts its task as rejected
  (requeued, with reject_on_worker_lost), and the task's rerun is counted when it happens.

CPU time and memory of the executing process are read by the parent from ``/proc/<child>``
when a task ends (one read per task; CPU is the child's delta since its previous task ended).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery.worker.request import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from personal_assistant.workers.utils.metrics import MetricsCollector

logger = logging.getLogger(__name__)

REQUEST_CLASS = f"{__name__}:MetricsRequest"
# Header the producer stamps (before_task_publish) so queue wait excludes nothing but queueing.
PUBLISHED_AT_HEADER = "pa_published_at"
LABELS = ("name", "hostname", "queue_name")
# Seconds: from a no-op (~1 ms) to the one-hour hard limit.
RUNTIME_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_process_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds used so far, resident bytes) of a process, from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # the command name may contain spaces
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime
    return cpu, int(fields[21]) * _PAGE_SIZE


class TaskMetricsRecorder:
    """The worker's task metrics (one per worker main process)."""

    def __init__(self, hostname: str, registry: CollectorRegistry | None = None) -> None:
        self.hostname = hostname
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "celery_task_received", "Tasks received by the worker", LABELS, registry=r
        )
        self.started = Counter("celery_task_started", "Tasks started", LABELS, registry=r)
        self.succeeded = Counter(
            "celery_task_succeeded", "Tasks that succeeded", LABELS, registry=r
        )
        self.failed = Counter(
            "celery_task_failed", "Tasks that failed for good", (*LABELS, "exception"), registry=r
        )
        self.retried = Counter("celery_task_retried", "Task retries requested", LABELS, registry=r)
        self.rejected = Counter(
            "celery_task_rejected",
            "Tasks rejected or requeued (e.g. their process was killed)",
            LABELS,
            registry=r,
        )
        self.revoked = Counter("celery_task_revoked", "Tasks revoked", LABELS, registry=r)
        self.runtime = Histogram(
            "celery_task_runtime",
            "Task run time (seconds)",
            LABELS,
            buckets=RUNTIME_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "celery_task_queue_wait_time",
            "Publish to start, ETA/countdown excluded (seconds)",
            LABELS,
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.cpu = Counter(
            "celery_task_cpu_seconds", "CPU time of the executing process", LABELS, registry=r
        )
        self.memory = Gauge(
            "celery_task_max_rss_bytes",
            "Largest resident memory of a process at a task's end",
            LABELS,
            registry=r,
        )
        self.active = Gauge(
            "celery_worker_tasks_active", "Tasks running now", ("hostname",), registry=r
        )
        # The seed's collector, fed by the same events: bounded summaries with p95 for `status`.
        self.collector = MetricsCollector(sample_resources=False)
        #: Called with each task event as alerting reads it (utils/alerting_hook.py).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._active = 0
        self._child_cpu: dict[int, float] = {}
        self._max_rss: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()  # events come from the main thread; scrapes from others

    def labels(self, name: str, queue: str) -> tuple[str, str, str]:
        """The label values of one task kind on this worker."""
        return name, self.hostname, queue

    def on_received(self, labels: tuple[str, str, str]) -> None:
        self.received.labels(*labels).inc()

    def on_started(self, labels: tuple[str, str, str], wait: float | None, pid: int) -> None:
        self.started.labels(*labels).inc()
        if wait is not None:
            self.queue_wait.labels(*labels).observe(max(wait, 0.0))
        with self._lock:
            self._active += 1
            self.active.labels(self.hostname).set(self._active)
            if pid not in self._child_cpu:
                usage = read_process_usage(pid)
                self._child_cpu[pid] = usage[0] if usage else 0.0

    def on_finished(
        self, labels: tuple[str, str, str], runtime: float | None, pid: int | None
    ) -> None:
        """Common bookkeeping of every end of a started task."""
        if runtime is not None:
            self.runtime.labels(*labels).observe(max(runtime, 0.0))
        with self._lock:
            self._active = max(self._active - 1, 0)
            self.active.labels(self.hostname).set(self._active)
        if pid:
            usage = read_process_usage(pid)
            if usage is None:
                self._child_cpu.pop(pid, None)  # the child is gone (recycled or killed)
                return
            cpu, rss = usage
            self.cpu.labels(*labels).inc(max(cpu - self._child_cpu.get(pid, cpu), 0.0))
            self._child_cpu[pid] = cpu
            key = (labels[0], labels[2])
            if rss > self._max_rss.get(key, 0):
                self._max_rss[key] = rss
                self.memory.labels(*labels).set(rss)


_recorder: TaskMetricsRecorder | None = None
# How each end event reads in the collector's (the seed's) vocabulary.
_COLLECTOR_STATUS = {
    "task-succeeded": "completed",
    "task-failed": "failed",
    "task-retried": "retry",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}


def install_recorder(recorder: TaskMetricsRecorder | None) -> None:
    """Make ``recorder`` receive the task events of this process (None turns it off)."""
    global _recorder  # noqa: PLW0603 - one recorder per worker process, set at start-up
    _recorder = recorder


def current_recorder() -> TaskMetricsRecorder | None:
    """The recorder of this process, if metrics are on."""
    return _recorder


class MetricsRequest(Request):  # type: ignore[misc]
    """Celery's request, recording its lifecycle events into the process's recorder.

    Runs in the worker's main process: that is where every outcome arrives (see module doc).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap the success handler of the request class Celery derives per task.

        Celery's derived class (worker/request.py: create_request_cls) overrides on_success
        and reports a success only when task events are on. Events on would cost every task
        an event built in the child and in the parent, so they stay off and the success is
        recorded here instead; every other outcome reaches send_event regardless.
        """
        super().__init_subclass__(**kwargs)
        inner = cls.__dict__.get("on_success")
        if inner is None:
            return

        def on_success(self: MetricsRequest, failed__retval__runtime: Any, **kw: Any) -> Any:
            failed, _, runtime = failed__retval__runtime
            if not failed:
                self.send_event("task-succeeded", runtime=runtime)
            return inner(self, failed__retval__runtime, **kw)

        cls.on_success = on_success

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        recorder = _recorder
        if recorder is not None:
            queue = (self.delivery_info or {}).get("routing_key") or ""
            self._metric_labels = recorder.labels(self.name, queue)
            recorder.on_received(self._metric_labels)

    def _queue_wait(self) -> float | None:
        published = self._request_dict.get(PUBLISHED_AT_HEADER)
        if published is None or self.time_start is None:
            return None
        ready_at = float(published)
        if self.eta:  # waiting for an ETA is not queueing
            try:
                ready_at = max(ready_at, _timestamp(self.eta))
            except (TypeError, ValueError):
                return None
        return float(self.time_start) - ready_at

    def send_event(self, type: str, **fields: Any) -> None:  # Celery's parameter name
        """Record the event, then hand it to Celery (which drops task events: they are off)."""
        recorder = _recorder
        labels = getattr(self, "_metric_labels", None)
        if recorder is not None and labels is not None:
            try:
                self._record(recorder, labels, type, fields)
            except Exception:
                logger.exception("recording %s of %s failed; task unaffected", type, self.id)
        super().send_event(type, **fields)

    def _record(
        self,
        recorder: TaskMetricsRecorder,
        labels: tuple[str, str, str],
        type_: str,
        fields: dict[str, Any],
    ) -> None:
        started = self.time_start is not None and not getattr(self, "_metrics_ended", False)
        pid = self.worker_pid
        if type_ == "task-started":
            wait = self._queue_wait()
            recorder.on_started(labels, wait, pid)
            recorder.collector.start_task(
                self.id,
                self.name,
                queue_time=wait,
                retry_count=int(self._request_dict.get("retries") or 0),
            )
            return
        error = None
        if type_ == "task-succeeded":
            # Reported by our on_success wrapper, and again by Celery's own when the worker's
            # event dispatcher is on for heartbeats: count it once.
            if getattr(self, "_success_counted", False):
                return
            self._success_counted = True
        if type_ == "task-revoked":
            recorder.revoked.labels(*labels).inc()
        elif type_ == "task-succeeded":
            recorder.succeeded.labels(*labels).inc()
        elif type_ == "task-failed":
            error = str(fields.get("exception", ""))
            recorder.failed.labels(*labels, error.split("(", 1)[0] or "Exception").inc()
        elif type_ == "task-retried":
            recorder.retried.labels(*labels).inc()
        elif type_ == "task-rejected":
            recorder.rejected.labels(*labels).inc()
        else:
            return
        if started:
            self._metrics_ended = True
            recorder.collector.end_task(self.id, _COLLECTOR_STATUS[type_], error)
            runtime = fields.get("runtime")
            if runtime is None:
                runtime = time.time() - float(self.time_start)
            recorder.on_finished(labels, float(runtime), pid)
        if recorder.listeners and type_ in ("task-failed", "task-succeeded"):
            self._notify(recorder, labels, type_, fields, error)

    def _notify(
        self,
        recorder: TaskMetricsRecorder,
        labels: tuple[str, str, str],
        type_: str,
        fields: dict[str, Any],
        error: str | None,
    ) -> None:
        event: dict[str, Any] = {
            "task_name": labels[0],
            "hostname": labels[1],
            "queue": labels[2],
            "task_id": self.id,
        }
        if type_ == "task-succeeded":
            event.update(event="task_succeeded", runtime=fields.get("runtime"))
        elif (error or "").startswith("TimeLimitExceeded"):
            event.update(event="task_timeout", error=error)
        else:
            event.update(event="task_failed", error=error)
        for listener in recorder.listeners:
            listener(event)


def _timestamp(value: Any) -> float:
    from datetime import datetime  # noqa: PLC0415 - only for ETA tasks, a rare path

    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


class QueueLengthCollector(Collector):
    """``celery_queue_length{queue_name}``, read from the broker at scrape time."""

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "celery_queue_length", "Messages waiting in the queue", labels=["queue_name"]
        )
        try:
            depths = self._read()
        except Exception:
            logger.warning("queue length unavailable", exc_info=True)
            depths = {}
        for queue, depth in sorted(depths.items()):
            family.add_metric([queue], depth)
        yield family
