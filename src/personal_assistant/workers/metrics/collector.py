"""Task execution metrics in bounded memory: recent per-task records and per-name aggregates.

The seed's collector kept every :class:`TaskMetrics` forever plus a list of every duration per
task name (about 400 bytes per task, measured), so a long-lived worker grew without limit. Here
every structure has a fixed bound (the constants below say why each value):

- finished records: the most recent :data:`FINISHED_WINDOW`, to look a recent task up by id;
- running records: at most :data:`MAX_RUNNING`; a task whose end never comes (worker killed,
  signal lost) is evicted oldest-first and counted as *lost*;
- aggregates: per task name, counters and a log-bucketed histogram of fixed size (quantiles
  within :data:`QUANTILE_RELATIVE_ACCURACY`), for at most :data:`MAX_TASK_NAMES` names.

With every bound full (measured): ~0.5 MB of finished records, ~4 MB of running ones and at
most ~11 MB of aggregates (1,000 names whose durations span the histogram's whole range).

``start_task``/``end_task`` sample CPU time and RSS of the calling process, so a collector fed
that way belongs in the process that runs the tasks; with a thread or gevent pool the samples
include the concurrent tasks' share. The worker's own collector lives in its main process and is
fed by :meth:`MetricsCollector.observe` with the child's figures (recorder.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psutil

# Finished records are for "what happened to task X a moment ago"; the aggregates keep the long
# view. A thousand records (~0.5 MB, ~450 B each) cover minutes of a busy worker's history.
FINISHED_WINDOW: Final = 1_000
# A worker runs at most a few hundred tasks at once (concurrency x prefetch); more running
# records than this means ends were lost (killed child, missed signal), so the oldest go.
MAX_RUNNING: Final = 10_000
# Task names come from code, so there are tens of them; a caller putting ids into names would
# otherwise create one histogram per task. Names past the cap are aggregated under OTHER.
MAX_TASK_NAMES: Final = 1_000
OTHER_TASK_NAME: Final = "__other__"
# Quantiles are reported within 1 % of the true value (DDSketch's guarantee), which is finer
# than the run-to-run noise of any task duration.
QUANTILE_RELATIVE_ACCURACY: Final = 0.01
# The histogram's accurate range: 1 us (a no-op task) to a day (past any time limit). Shorter and
# longer durations share two open-ended buckets, reported as the exact min and max kept beside.
MIN_TRACKED_SECONDS: Final = 1e-6
MAX_TRACKED_SECONDS: Final = 86_400.0

_GAMMA: Final = (1 + QUANTILE_RELATIVE_ACCURACY) / (1 - QUANTILE_RELATIVE_ACCURACY)
_INV_LOG_GAMMA: Final = 1 / math.log(_GAMMA)
_LOG_MIN: Final = math.log(MIN_TRACKED_SECONDS)
# Bucket 0 holds everything up to MIN; _OVERFLOW everything past MAX (reported as the max).
_OVERFLOW: Final = math.ceil((math.log(MAX_TRACKED_SECONDS) - _LOG_MIN) * _INV_LOG_GAMMA) + 1
_QUANTILES: Final = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
# Status -> counter. Celery's state names count too, so signal handlers can pass `state`.
_OUTCOMES: Final = {"completed": "succeeded", "success": "succeeded", "succeeded": "succeeded"}
_OUTCOMES.update(failed="failed", failure="failed", retry="retries")
_MIB: Final = 1024 * 1024


@dataclass(slots=True)
class TaskMetrics:
    """One execution of a task: the seed's fields plus CPU time and RSS in bytes.

    ``execution_time`` and ``cpu_time`` are seconds; ``memory_usage`` is the process RSS at the
    end in MiB (the seed's unit-less float), ``memory_rss_bytes`` the same in bytes and
    ``memory_delta_bytes`` its change during the task; ``cpu_usage`` is the percentage of one
    core used (``cpu_time / execution_time * 100``). Resource fields stay None when sampling is
    off. ``queue_time`` is what the caller measured between publish and start.
    """

    task_id: str
    task_name: str
    start_time: datetime
    end_time: datetime | None = None
    execution_time: float | None = None
    memory_usage: float | None = None
    cpu_usage: float | None = None
    status: str = "running"
    error: str | None = None
    retry_count: int = 0
    queue_time: float | None = None
    cpu_time: float | None = None
    memory_rss_bytes: int | None = None
    memory_delta_bytes: int | None = None


def _bucket_value(index: int) -> float:
    """The value within the accuracy of every member of bucket ``index``.

    The two open-ended buckets give 0 and infinity, which the summary clamps to the exact
    min and max: the best that is known of values outside the tracked range.
    """
    if index in (0, _OVERFLOW):
        return 0.0 if index == 0 else math.inf
    return MIN_TRACKED_SECONDS * _GAMMA**index * 2 / (_GAMMA + 1)


class _LogHistogram:
    """Counts per logarithmic bucket (DDSketch's idea): quantiles within a relative error.

    Bucket i holds (MIN * gamma^(i-1), MIN * gamma^i]. Only the contiguous span of buckets seen
    so far is allocated, so a task whose durations stay within two decades costs ~2 KB, and
    none more than ``_OVERFLOW + 1`` counters (~10 KB).
    """

    __slots__ = ("_counts", "_offset")

    def __init__(self) -> None:
        self._counts = array("Q")
        self._offset = 0

    def add(self, seconds: float) -> None:
        if seconds <= MIN_TRACKED_SECONDS:
            index = 0
        elif seconds > MAX_TRACKED_SECONDS:
            index = _OVERFLOW
        else:
            index = math.ceil((math.log(seconds) - _LOG_MIN) * _INV_LOG_GAMMA)
        position = index - self._offset
        if 0 <= position < len(self._counts):
            self._counts[position] += 1
        elif not self._counts:
            self._counts.append(1)
            self._offset = index
        elif position < 0:  # grow the span down, then up: rare once a task's range is seen
            self._counts = array("Q", bytes(8 * -position)) + self._counts
            self._counts[0], self._offset = 1, index
        else:
            self._counts.frombytes(bytes(8 * (position - len(self._counts))))
            self._counts.append(1)

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Estimates for ascending ``qs``, in one pass (rank ``q * (n - 1)``, as DDSketch)."""
        total = sum(self._counts)
        if not total:
            return [None for _ in qs]
        results: list[float | None] = []
        seen, wanted = 0, iter(qs)
        q = next(wanted, None)
        for position, count in enumerate(self._counts):
            seen += count
            while q is not None and seen > q * (total - 1):
                results.append(_bucket_value(position + self._offset))
                q = next(wanted, None)
            if q is None:
                break
        return results


class _NameStats:
    """Fixed-size aggregates of one task name."""

    __slots__ = (
        "count", "cpu_n", "cpu_sum", "failed", "histogram", "lost", "max_memory", "max_time",
        "min_time", "other", "queue_n", "queue_sum", "retries", "succeeded", "total_time",
    )  # fmt: skip

    def __init__(self) -> None:
        self.count = self.succeeded = self.failed = self.retries = self.other = self.lost = 0
        self.queue_n = self.cpu_n = 0
        self.total_time = self.queue_sum = self.cpu_sum = 0.0
        self.min_time, self.max_time = math.inf, -math.inf
        self.max_memory: int | None = None
        self.histogram = _LogHistogram()

    def add(
        self,
        seconds: float,
        status: str,
        queue_time: float | None = None,
        cpu_time: float | None = None,
        rss: int | None = None,
    ) -> None:
        self.count += 1
        self.total_time += seconds
        self.min_time = min(self.min_time, seconds)
        self.max_time = max(self.max_time, seconds)
        self.histogram.add(seconds)
        outcome = _OUTCOMES.get(status.lower(), "other")
        setattr(self, outcome, getattr(self, outcome) + 1)
        if queue_time is not None:
            self.queue_sum += queue_time
            self.queue_n += 1
        if cpu_time is not None:
            self.cpu_sum += cpu_time
            self.cpu_n += 1
        if rss is not None and (self.max_memory is None or rss > self.max_memory):
            self.max_memory = rss

    def copy(self) -> _NameStats:
        other = copy.copy(self)
        other.histogram = copy.deepcopy(self.histogram)
        return other

    def summary(self) -> dict[str, Any]:
        ends = self.succeeded + self.failed
        timed = self.count > 0
        estimates = self.histogram.quantiles(tuple(q for _, q in _QUANTILES))
        return {
            "count": self.count,
            "avg_time": self.total_time / self.count if timed else None,
            "min_time": self.min_time if timed else None,
            "max_time": self.max_time if timed else None,
            "total_time": self.total_time,
            # The sketch's estimate, clamped to the exact extremes it can only approximate.
            **{
                key: None if value is None else min(max(value, self.min_time), self.max_time)
                for (key, _), value in zip(_QUANTILES, estimates, strict=True)
            },
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retries": self.retries,
            "other": self.other,
            "lost": self.lost,
            "success_rate": self.succeeded / ends if ends else None,
            "avg_queue_time": self.queue_sum / self.queue_n if self.queue_n else None,
            "avg_cpu_time": self.cpu_sum / self.cpu_n if self.cpu_n else None,
            "max_memory": self.max_memory,
        }


class _RssProbe:
    """Current RSS in bytes: ~2 us by pread on a kept /proc/self/statm, psutil (~25 us) else.

    Reopened in a forked child: the inherited descriptor names the parent's /proc entry.
    """

    def __init__(self) -> None:
        self._fd = -1
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.reopen()

    def reopen(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # our copy only: the parent's stays open
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = -1  # not Linux: psutil below

    def read(self) -> int | None:
        if self._fd >= 0:
            with contextlib.suppress(OSError, ValueError, IndexError):  # then ask psutil
                return int(os.pread(self._fd, 64, 0).split()[1]) * self._page
        try:
            return int(psutil.Process().memory_info().rss)
        except psutil.Error:
            return None


_RSS = _RssProbe()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RSS.reopen)

# A running task: its record and the clocks read at its start (perf_counter, CPU, RSS).
_Running = tuple[TaskMetrics, float, float | None, int | None]


class _MetricsView(Mapping[str, TaskMetrics]):
    """Read-only view of running and recently finished records by task id."""

    def __init__(
        self, running: Mapping[str, _Running], done: Mapping[str, TaskMetrics], lock: threading.Lock
    ) -> None:
        self._running, self._finished, self._lock = running, done, lock

    def __getitem__(self, task_id: str) -> TaskMetrics:
        with self._lock:
            running = self._running.get(task_id)
            return running[0] if running is not None else self._finished[task_id]

    def __iter__(self) -> Iterator[str]:
        with self._lock:  # a snapshot: the dicts change under a live iterator
            return iter([*self._running, *self._finished])

    def __len__(self) -> int:
        with self._lock:
            return len(self._running) + len(self._finished)


class MetricsCollector:
    """Collects task executions of this process: records by id and aggregates by task name.

    Thread-safe. ``metrics`` maps a task id to its record while it runs and for the
    ``finished_window`` most recent finished tasks. ``sample_resources=False`` skips CPU and
    RSS sampling (~7 us per task) for callers that only want durations and outcomes.
    """

    def __init__(
        self,
        *,
        sample_resources: bool = True,
        finished_window: int = FINISHED_WINDOW,
        max_running: int = MAX_RUNNING,
        max_task_names: int = MAX_TASK_NAMES,
    ) -> None:
        if min(finished_window, max_running, max_task_names) < 1:
            raise ValueError("finished_window, max_running and max_task_names must be >= 1")
        self.sample_resources = sample_resources
        self._finished_window = finished_window
        self._max_running = max_running
        self._max_task_names = max_task_names
        self._lock = threading.Lock()
        self._running: OrderedDict[str, _Running] = OrderedDict()
        self._finished: OrderedDict[str, TaskMetrics] = OrderedDict()
        self._stats: dict[str, _NameStats] = {}
        self._lost = 0
        self._unknown_ends = 0
        self.metrics: Mapping[str, TaskMetrics] = _MetricsView(
            self._running, self._finished, self._lock
        )

    @property
    def lost_tasks(self) -> int:
        """Tasks started and never ended: evicted past ``max_running`` or started again."""
        return self._lost

    @property
    def unknown_ends(self) -> int:
        """``end_task`` calls ignored: id never started, already ended, or evicted as lost."""
        return self._unknown_ends

    def _sample(self) -> tuple[float | None, int | None]:
        if not self.sample_resources:
            return None, None
        return time.process_time(), _RSS.read()

    def _stats_for(self, task_name: str) -> _NameStats:
        stats = self._stats.get(task_name)
        if stats is None:
            if len(self._stats) >= self._max_task_names:
                task_name = OTHER_TASK_NAME
            stats = self._stats.setdefault(task_name, _NameStats())
        return stats

    def _lose(self, running: _Running) -> None:
        self._lost += 1
        self._stats_for(running[0].task_name).lost += 1

    def start_task(
        self, task_id: str, task_name: str, *, queue_time: float | None = None, retry_count: int = 0
    ) -> str:
        """Start tracking an execution of ``task_id``; returns ``task_id``.

        A Celery retry runs again under the same id: its finished record is replaced by the new
        running one. Starting an id that is still running counts the first run as lost.
        """
        now = datetime.now(UTC)
        record = TaskMetrics(
            task_id, task_name, now, retry_count=retry_count, queue_time=queue_time
        )
        cpu, rss = self._sample()
        running = (record, time.perf_counter(), cpu, rss)  # clock last: sampling is not the task's
        with self._lock:
            self._finished.pop(task_id, None)
            previous = self._running.pop(task_id, None)
            if previous is not None:
                self._lose(previous)
            self._running[task_id] = running
            if len(self._running) > self._max_running:
                self._lose(self._running.popitem(last=False)[1])
        return task_id

    def end_task(self, task_id: str, status: str = "completed", error: str | None = None) -> None:
        """Finish tracking ``task_id`` with ``status`` (recorded as given) and ``error``.

        "completed" and "failed" (or Celery's SUCCESS/FAILURE) count toward the success rate;
        "retry" counts in ``retries`` only, anything else in ``other``; all count in the timing
        aggregates, since the attempt took worker time. An id that is not running is ignored and
        counted in :attr:`unknown_ends` rather than raising inside a signal handler.
        """
        ended = time.perf_counter()
        cpu, rss = self._sample()
        end_time = datetime.now(UTC)
        with self._lock:
            running = self._running.pop(task_id, None)
            if running is None:
                self._unknown_ends += 1
                return
            record, started, cpu_start, rss_start = running
            seconds = ended - started
            record.end_time, record.execution_time = end_time, seconds
            record.status, record.error = status, error
            if cpu is not None and cpu_start is not None:
                record.cpu_time = max(0.0, cpu - cpu_start)
                record.cpu_usage = record.cpu_time / seconds * 100 if seconds > 0 else None
            if rss is not None:
                record.memory_rss_bytes, record.memory_usage = rss, rss / _MIB
                if rss_start is not None:
                    record.memory_delta_bytes = rss - rss_start
            self._stats_for(record.task_name).add(
                seconds, status, record.queue_time, record.cpu_time, record.memory_rss_bytes
            )
            self._finished[task_id] = record
            if len(self._finished) > self._finished_window:
                self._finished.popitem(last=False)

    def observe(
        self,
        task_name: str,
        seconds: float,
        *,
        status: str = "completed",
        queue_time: float | None = None,
        cpu_time: float | None = None,
        memory_rss_bytes: int | None = None,
    ) -> None:
        """Count an execution measured by the caller in the aggregates only (no record).

        For the worker's main process, told of a task by the pool when it is over: the
        summaries are all it reads (``pa-status``), and building a record per task to throw
        away later cost four times as much as the aggregates.
        """
        with self._lock:
            self._stats_for(task_name).add(seconds, status, queue_time, cpu_time, memory_rss_bytes)

    def get_performance_summary(self) -> dict[str, dict[str, Any]]:
        """Aggregates per task name since the collector was made (not only the window).

        Keys: count, avg_time, min_time, max_time, total_time, p50, p95, p99 (seconds; None
        when count is 0), succeeded, failed, retries, other, lost, success_rate (succeeded /
        (succeeded + failed), None before either), avg_queue_time, avg_cpu_time (seconds, None
        when never measured) and max_memory (peak end-of-task RSS in bytes, or None).
        """
        with self._lock:  # copy under the lock, compute quantiles outside it
            snapshot = [(name, stats.copy()) for name, stats in self._stats.items()]
        return {name: stats.summary() for name, stats in snapshot}
