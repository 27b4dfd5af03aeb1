"""Task metrics that stay true under the prefork pool, in the names people's dashboards use.

Where the numbers come from: Celery's worker *main* process already learns every outcome of
every task, whichever child runs it: it receives the message, is told when a child accepts it,
gets the result (or the runtime and exception) back through the pool, and notices a child that
died (WorkerLostError). It reports each of these as a task event (task-received, -started,
-succeeded, -failed, -retried, -rejected, -revoked), the events Flower and the popular exporter
consume over the broker at a quarter of the throughput. Here the request class records them
straight into plain numbers in that main process (task_series.py), with task events left off
(no event is built, nothing reaches the broker). So:

- no per-child HTTP servers (each of which would export about 1/N of the truth);
- no multiprocess files (one per dead child, making scrapes take seconds under churn);
- a child killed with SIGKILL is seen by the parent, which counts its task as rejected
  (requeued, with reject_on_worker_lost), and the task's rerun is counted when it happens.

The main process is the one every task of the worker passes through, so what a task costs there
is what metrics cost the worker's throughput. Counts and histograms are updated as events
arrive (an increment each). CPU time and memory of the executing child come from its
``/proc/<pid>/stat`` (child_usage.py), which costs 35 us a read inside a busy worker: so ended
tasks wait in a queue and are *settled* in batches, each child read once per batch and its CPU
shared among the batch's tasks by run time. A batch is settled at every scrape (so what is
scraped is complete), every SETTLE_EVERY_S, every SETTLE_AFTER_TASKS tasks, and when a child
ends the last task ``--max-tasks-per-child`` allows it (before it exits and its file goes).
Measured with ``time.thread_time_ns`` in a worker draining 5,000 no-op tasks: the recorder went
from 130 us a task (prometheus-client metrics, one read per task) to about 45 us, of Celery's
own 2.7 ms per task in that process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from math import inf
from typing import Any

from celery.worker.request import Request
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from personal_assistant.workers.broker.request import DeliveryRequest
from personal_assistant.workers.metrics.child_usage import ChildUsage
from personal_assistant.workers.metrics.collector import MetricsCollector
from personal_assistant.workers.metrics.series import TaskSeries, TaskSeriesCollector

logger = logging.getLogger(__name__)

REQUEST_CLASS = f"{__name__}:MetricsRequest"
# Header the producer stamps (before_task_publish) so queue wait excludes nothing but queueing.
PUBLISHED_AT_HEADER = "pa_published_at"
# Settling reads each child once: at most this stale between scrapes (pa-status reads every
# 10 s), and at most this many ended tasks held (a few hundred bytes each).
SETTLE_EVERY_S = 1.0
SETTLE_AFTER_TASKS = 1024

# (series, collector status, run time, queue wait, child pid) of a task waiting to be settled.
_Ended = tuple[TaskSeries, str, float, "float | None", "int | None"]


class TaskMetricsRecorder:
    """The worker's task metrics (one per worker main process)."""

    def __init__(
        self,
        hostname: str,
        registry: CollectorRegistry | None = None,
        *,
        max_tasks_per_child: int | None = None,
    ) -> None:
        self.hostname = hostname
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # The seed's collector, fed by the same events (aggregates only, with the child's CPU
        # and memory): the summaries with p95 that `pa-status` shows.
        self.collector = MetricsCollector(sample_resources=False)
        #: Called with each task event as alerting reads it (utils/alerting_hook.py).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        #: Tasks running now (written by the main thread only).
        self.active = 0
        self.usage = ChildUsage()
        self.max_tasks_per_child = max_tasks_per_child
        self._series: dict[tuple[str, str], TaskSeries] = {}
        self._ended: deque[_Ended] = deque()  # appended by the main thread, drained by settle
        self._ends_per_child: dict[int, int] = {}
        self._settle_lock = threading.Lock()
        self._settle_due = time.monotonic() + SETTLE_EVERY_S
        self.registry.register(
            TaskSeriesCollector(
                lambda: list(self._series.values()),
                lambda: self.active,
                hostname,
                before_collect=self.settle,
            )
        )

    def series(self, name: str, queue: str) -> TaskSeries:
        """The series of one task kind on this worker (created on first use, then reused)."""
        found = self._series.get((name, queue))
        if found is None:
            found = self._series[(name, queue)] = TaskSeries((name, self.hostname, queue))
        return found

    def task_started(self, series: TaskSeries, wait: float | None, pid: int | None) -> None:
        """A child accepted the task (``wait``: its time in the queue, if known)."""
        series.started += 1
        if wait is not None:
            series.queue_wait.observe(wait)
        self.active += 1
        if pid:
            self.usage.begin(pid)

    def task_ended(
        self,
        series: TaskSeries,
        status: str,
        runtime: float,
        wait: float | None,
        pid: int | None,
    ) -> None:
        """A started task is over (``status`` in the collector's words); its CPU and memory
        are charged when it is settled."""
        self.active = max(self.active - 1, 0)
        series.runtime.observe(runtime)
        self._ended.append((series, status, runtime, wait, pid))
        due = len(self._ended) >= SETTLE_AFTER_TASKS or time.monotonic() >= self._settle_due
        if pid and self.max_tasks_per_child:
            ends = self._ends_per_child[pid] = self._ends_per_child.get(pid, 0) + 1
            due = due or ends >= self.max_tasks_per_child  # it exits now: read it first
        if due:
            self.settle()

    def settle(self) -> None:
        """Charge every ended task its share of its child's CPU and the child's memory, and
        feed the collector. Safe from any thread (the main one, or a scrape's)."""
        with self._settle_lock:
            self._settle_due = time.monotonic() + SETTLE_EVERY_S
            by_child: dict[int | None, list[_Ended]] = {}
            while self._ended:
                ended = self._ended.popleft()
                by_child.setdefault(ended[4], []).append(ended)
            for pid, tasks in by_child.items():
                usage = self.usage.end(pid) if pid else None
                last = self._ends_per_child.get(pid or 0, 0) >= (self.max_tasks_per_child or inf)
                if pid and (usage is None or last):
                    self._ends_per_child.pop(pid, None)  # gone, or about to go
                    self.usage.forget(pid)
                self._charge(tasks, usage)

    def _charge(self, tasks: list[_Ended], usage: tuple[float, int] | None) -> None:
        cpu, rss = usage if usage is not None else (None, None)
        total_runtime = sum(task[2] for task in tasks)
        for series, status, runtime, wait, _ in tasks:
            share = None
            if cpu is not None and rss is not None:
                # By run time: the child's CPU between two reads went mostly to what it ran.
                share = cpu * (runtime / total_runtime if total_runtime > 0 else 1 / len(tasks))
                series.cpu += share
                series.max_rss = max(series.max_rss, rss)
            self.collector.observe(
                series.labels[0],
                runtime,
                status=status,
                queue_time=wait,
                cpu_time=share,
                memory_rss_bytes=rss,
            )


_recorder: TaskMetricsRecorder | None = None
# Failures that are time limits, for the alerts' task_timeout (the soft limit ends a task too).
TIME_LIMIT_ERRORS = ("TimeLimitExceeded", "SoftTimeLimitExceeded")
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


class MetricsRequest(DeliveryRequest):
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
            self._metric_series = series = recorder.series(self.name, queue)
            series.received += 1

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
        series: TaskSeries,
        type_: str,
        fields: dict[str, Any],
    ) -> None:
        started = self.time_start is not None and not getattr(self, "_metrics_ended", False)
        if type_ == "task-started":
            self._metric_wait = wait = self._queue_wait()
            recorder.task_started(series, wait, self.worker_pid)
            return
        error = None
        if type_ == "task-failed":
            # Celery reports a hard time limit twice (the pool's error callback, then
            # on_timeout): the first report is the task's end, the second is not counted.
            if getattr(self, "_metrics_failed", False):
                return
            self._metrics_failed = True
        if type_ == "task-succeeded":
            series.succeeded += 1
        elif type_ == "task-failed":
            error = self._failure_text(fields)
            exception = error.split("(", 1)[0] or "Exception"
            series.failed[exception] = series.failed.get(exception, 0) + 1
        elif type_ == "task-retried":
            series.retried += 1
        elif type_ == "task-rejected":
            reason = "requeued" if fields.get("requeue") else "rejected"
            series.rejected[reason] = series.rejected.get(reason, 0) + 1
        elif type_ == "task-revoked":
            series.revoked += 1
        else:
            return
        if started:
            self._metrics_ended = True
            runtime = fields.get("runtime")
            if runtime is None:
                runtime = time.time() - float(self.time_start)
            recorder.task_ended(
                series,
                _COLLECTOR_STATUS[type_],
                max(float(runtime), 0.0),
                getattr(self, "_metric_wait", None),
                self.worker_pid,
            )
        if recorder.listeners and type_ in ("task-failed", "task-succeeded"):
            self._notify(recorder, series.labels, type_, fields, error)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, **kw: Any) -> Any:
        """Celery's failure handler; the exception is kept for the metric's label first."""
        self._failure_exc = _unwrapped(getattr(exc_info, "exception", None))
        return super().on_failure(exc_info, send_failed_event=send_failed_event, **kw)

    def _failure_text(self, fields: dict[str, Any]) -> str:
        # The pool reports an exception that crossed the process boundary wrapped in
        # billiard's ExceptionWithTraceback; the label and the alerts need the real one.
        text = str(fields.get("exception", ""))
        real = getattr(self, "_failure_exc", None)
        if text.startswith("ExceptionWithTraceback") and real is not None:
            return f"{type(real).__name__}({real})"
        return text

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
        elif (error or "").startswith(TIME_LIMIT_ERRORS):
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


def _unwrapped(exc: Any) -> Any:
    """The exception inside billiard's ExceptionWithTraceback (or ``exc`` itself)."""
    return getattr(exc, "exc", exc) if type(exc).__name__ == "ExceptionWithTraceback" else exc


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
