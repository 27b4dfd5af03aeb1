"""Task metrics that stay true under the prefork pool, in the names people's dashboards use.

Where the numbers come from: Celery's worker *main* process already learns every outcome of
every task, whichever child runs it: it receives the message, is told when a child accepts it,
gets the result (or the runtime and exception) back through the pool, and notices a child that
died (WorkerLostError). It reports each of these as a task event (task-received, -started,
-succeeded, -failed, -retried, -rejected, -revoked), the events Flower and the popular exporter
consume over the broker at a quarter of the throughput. Here the request class records them
straight into plain numbers in that main process (series.py), with task events left off
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
Measured with ``time.thread_time_ns`` in a worker draining 5,000 no-op tasks, the recorder costs
about 45 us a task, of Celery's own 2.7 ms per task in that process.

The request class that feeds the recorder is metrics/request.py; the recorder reaches it through
the app (``app.metrics_recorder``, set by the metrics hook at worker start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from math import inf
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from personal_assistant.workers.metrics.child_usage import ChildUsage
from personal_assistant.workers.metrics.collector import MetricsCollector
from personal_assistant.workers.metrics.series import TaskSeries, TaskSeriesCollector

logger = logging.getLogger(__name__)
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
        #: Called with each task event as alerting reads it (alerting/hook.py).
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
