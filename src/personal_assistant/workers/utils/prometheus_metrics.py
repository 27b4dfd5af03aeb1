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
when a task ends (one read of a file kept open per child; CPU is the child's delta since its
previous task ended). Everything a task costs the main process here is a few dict lookups and
counter increments on series looked up once per task kind: about 16 us per task, measured
on this machine, down from 35 us with a ``labels()`` lookup and an open() per use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
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


def _parse_stat(raw: bytes) -> tuple[float, int]:
    fields = raw[raw.rfind(b")") + 2 :].split()  # the command name may contain spaces
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime
    return cpu, int(fields[21]) * _PAGE_SIZE


class ChildUsage:
    """CPU used per task and memory of the pool's children, read from ``/proc/<pid>/stat``.

    Each child's stat file stays open: reading an open procfs file again from offset 0
    regenerates it, at a quarter of the cost of open, read and close (measured 3.7 against
    17.6 us), and the main process pays it once per task. An open file belongs to its process:
    once that process is gone, reading it fails (ESRCH) even if a new child got the same pid,
    so a recycled pid is never mistaken for the old child. Children recycled by
    ``--max-tasks-per-child`` leave entries behind: past ``size`` the oldest are closed. 64
    covers the concurrency of any one worker here (2 to 16), so live children stay open and at
    most 64 file descriptors are held for children already gone.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._files: OrderedDict[int, int] = OrderedDict()  # pid -> open stat file
        self._cpu_at_last_end: dict[int, float] = {}

    def begin(self, pid: int) -> None:
        """A task starts in ``pid``: the first time, note the CPU it used before (start-up)."""
        if pid not in self._cpu_at_last_end:
            usage = self._read(pid)
            self._cpu_at_last_end[pid] = usage[0] if usage else 0.0

    def end(self, pid: int) -> tuple[float, int] | None:
        """A task ended in ``pid``: (CPU seconds it used, resident bytes now); None if gone."""
        usage = self._read(pid)
        if usage is None:
            self.forget(pid)
            return None
        cpu, rss = usage
        used = max(cpu - self._cpu_at_last_end.get(pid, cpu), 0.0)
        self._cpu_at_last_end[pid] = cpu
        return used, rss

    def forget(self, pid: int) -> None:
        """Close what is kept for ``pid`` (its process is gone)."""
        fd = self._files.pop(pid, None)
        if fd is not None:
            os.close(fd)
        self._cpu_at_last_end.pop(pid, None)

    def close(self) -> None:
        """Close every kept file."""
        for pid in list(self._files):
            self.forget(pid)

    def _read(self, pid: int) -> tuple[float, int] | None:
        fd = self._files.get(pid)
        if fd is None:
            try:
                fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            self._files[pid] = fd
            while len(self._files) > self.size:
                self.forget(next(iter(self._files)))
        try:
            return _parse_stat(os.pread(fd, 1024, 0))
        except OSError:
            return None


class _TaskSeries:
    """The labelled series of one task kind on this worker, looked up once and then reused.

    prometheus_client's ``labels()`` checks and locks on every call, and a task would pay it
    about eight times in the main process: the children it returns are kept here instead.
    """

    __slots__ = (
        "cpu",
        "labels",
        "max_rss",
        "memory",
        "queue_wait",
        "received",
        "rejected",
        "retried",
        "revoked",
        "runtime",
        "started",
        "succeeded",
    )

    def __init__(self, recorder: TaskMetricsRecorder, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.received = recorder.received.labels(*labels)
        self.started = recorder.started.labels(*labels)
        self.succeeded = recorder.succeeded.labels(*labels)
        self.retried = recorder.retried.labels(*labels)
        self.rejected = recorder.rejected.labels(*labels)
        self.revoked = recorder.revoked.labels(*labels)
        self.runtime = recorder.runtime.labels(*labels)
        self.queue_wait = recorder.queue_wait.labels(*labels)
        self.cpu = recorder.cpu.labels(*labels)
        self.memory = recorder.memory.labels(*labels)
        self.max_rss = 0  # the largest RSS seen, mirrored in `memory`


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
        # The seed's collector, fed by the same events (aggregates only, with the child's CPU
        # and memory): the summaries with p95 that `pa-status` shows.
        self.collector = MetricsCollector(sample_resources=False)
        #: Called with each task event as alerting reads it (utils/alerting_hook.py).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._active = 0
        self._active_series = self.active.labels(hostname)
        self._series: dict[tuple[str, str], _TaskSeries] = {}
        self.usage = ChildUsage()
        self._lock = threading.Lock()  # events come from the main thread; scrapes from others

    def series(self, name: str, queue: str) -> _TaskSeries:
        """The series of one task kind on this worker (created on first use, then reused)."""
        found = self._series.get((name, queue))
        if found is None:
            found = self._series[(name, queue)] = _TaskSeries(self, (name, self.hostname, queue))
        return found

    def on_received(self, series: _TaskSeries) -> None:
        """A task message arrived."""
        series.received.inc()

    def on_started(self, series: _TaskSeries, wait: float | None, pid: int) -> None:
        """A child accepted the task (``wait``: its time in the queue, if known)."""
        series.started.inc()
        if wait is not None:
            series.queue_wait.observe(wait)
        with self._lock:
            self._active += 1
            self._active_series.set(self._active)
            self.usage.begin(pid)

    def on_finished(
        self, series: _TaskSeries, runtime: float | None, pid: int | None
    ) -> tuple[float, int] | None:
        """Common bookkeeping of every end of a started task; returns the (CPU seconds, RSS
        bytes) of its child, None when there is no child or it is gone."""
        if runtime is not None:
            series.runtime.observe(runtime)
        with self._lock:
            self._active = max(self._active - 1, 0)
            self._active_series.set(self._active)
            usage = self.usage.end(pid) if pid else None
        if usage is None:
            return None  # no child, or the child is gone (recycled or killed)
        cpu, rss = usage
        series.cpu.inc(cpu)
        if rss > series.max_rss:
            series.max_rss = rss
            series.memory.set(rss)
        return usage


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
        recorded by this wrapper instead; every other outcome reaches send_event regardless.
        """
        super().__init_subclass__(**kwargs)
        inner = cls.__dict__.get("on_success")
        if inner is not None:
            cls.on_success = _recording_success(inner)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        recorder = _recorder
        if recorder is not None:
            queue = (self.delivery_info or {}).get("routing_key") or ""
            self._metric_series = recorder.series(self.name, queue)
            recorder.on_received(self._metric_series)

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
        return max(float(self.time_start) - ready_at, 0.0)  # clocks of two hosts may disagree

    def send_event(self, type: str, **fields: Any) -> None:  # Celery's parameter name
        """Record the event, then hand it to Celery (which drops task events: they are off).

        A success is recorded by the on_success wrapper, never here: Celery reports it here
        only when events are on (for the worker's heartbeats, say), and it must count once.
        """
        if type != "task-succeeded":
            self._record_event(type, fields)
        super().send_event(type, **fields)

    def _record_event(self, type_: str, fields: dict[str, Any]) -> None:
        recorder = _recorder
        series = getattr(self, "_metric_series", None)
        if recorder is not None and series is not None:
            try:
                self._record(recorder, series, type_, fields)
            except Exception:
                logger.exception("recording %s of %s failed; task unaffected", type_, self.id)

    def _record(
        self,
        recorder: TaskMetricsRecorder,
        series: _TaskSeries,
        type_: str,
        fields: dict[str, Any],
    ) -> None:
        started = self.time_start is not None and not getattr(self, "_metrics_ended", False)
        pid = self.worker_pid
        if type_ == "task-started":
            self._metric_wait = wait = self._queue_wait()
            recorder.on_started(series, wait, pid)
            return
        error = None
        if type_ == "task-revoked":
            series.revoked.inc()
        elif type_ == "task-succeeded":
            series.succeeded.inc()
        elif type_ == "task-failed":
            error = str(fields.get("exception", ""))
            exception = error.split("(", 1)[0] or "Exception"
            recorder.failed.labels(*series.labels, exception).inc()
        elif type_ == "task-retried":
            series.retried.inc()
        elif type_ == "task-rejected":
            series.rejected.inc()
        else:
            return
        if started:
            self._metrics_ended = True
            runtime = fields.get("runtime")
            if runtime is None:
                runtime = time.time() - float(self.time_start)
            runtime = max(float(runtime), 0.0)
            usage = recorder.on_finished(series, runtime, pid)
            recorder.collector.observe(
                self.name,
                runtime,
                status=_COLLECTOR_STATUS[type_],
                queue_time=getattr(self, "_metric_wait", None),
                cpu_time=usage[0] if usage else None,
                memory_rss_bytes=usage[1] if usage else None,
            )
        if recorder.listeners and type_ in ("task-failed", "task-succeeded"):
            self._notify(recorder, series.labels, type_, fields, error)

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


def _recording_success(inner: Callable[..., Any]) -> Callable[..., Any]:
    """``inner`` (a request's on_success) that first records a success in the recorder."""

    def on_success(self: MetricsRequest, failed__retval__runtime: Any, **kw: Any) -> Any:
        failed, _, runtime = failed__retval__runtime
        if not failed:
            self._record_event("task-succeeded", {"runtime": runtime})
        return inner(self, failed__retval__runtime, **kw)

    return on_success


# Celery always derives a class per task (wrapped above); the base records successes too.
MetricsRequest.on_success = _recording_success(Request.on_success)


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
