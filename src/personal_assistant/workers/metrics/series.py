"""The worker's task series as plain numbers, turned into Prometheus samples only when scraped.

Why not prometheus_client's ``Counter`` and ``Histogram`` for these: every ``inc()`` and
``observe()`` checks the metric's state and takes a lock, and a task makes about ten of them in
the worker's main process, the one process every task of the worker passes through, so that
bookkeeping is a visible share of the main thread's time (README, "Benchmarks"). Here an event
is an attribute increment (and a ``bisect`` for a histogram) on one object per task kind.

Thread safety: the worker's main thread is the only writer of these numbers; the scrape thread
only reads them. A Python int or float is replaced whole, never torn, so a scrape sees each
value as of some event, at most one event behind. Dicts are copied with ``list()`` (one C call
under the GIL) before they are iterated, since the main thread may add a task kind meanwhile.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# The labels of every task series, as in the popular exporter's dashboards (DESIGN.md section 5).
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

# (attribute, metric name, help) of the counters every task kind has.
COUNTERS = (
    ("received", "celery_task_received", "Tasks received by the worker"),
    ("started", "celery_task_started", "Tasks started"),
    ("succeeded", "celery_task_succeeded", "Tasks that succeeded"),
    ("retried", "celery_task_retried", "Task retries requested"),
    ("revoked", "celery_task_revoked", "Tasks revoked"),
    ("cpu", "celery_task_cpu_seconds", "CPU time of the executing process"),
)


# How prometheus_client spells a bucket bound ("0.005", "1.0", "+Inf"); it ships untyped.
_go_float = cast(Callable[[float], str], floatToGoString)


class BucketCounts:
    """A histogram's buckets as plain counts (one per bound, plus +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "le", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.le = tuple(_go_float(bound) for bound in (*bounds, float("inf")))

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value`` (``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(``le``, cumulative count) pairs, ending with ``+Inf`` (the count of everything)."""
        counts = list(self.counts)  # one copy: the sum below stays consistent with itself
        out: list[tuple[str, float]] = []
        seen = 0
        for le, count in zip(self.le, counts, strict=True):
            seen += count
            out.append((le, seen))
        return out


class TaskSeries:
    """Every number kept for one task kind (name and queue) on this worker."""

    __slots__ = (
        "cpu",
        "failed",
        "labels",
        "max_rss",
        "queue_wait",
        "received",
        "rejected",
        "retried",
        "revoked",
        "runtime",
        "started",
        "succeeded",
    )

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.received = 0
        self.started = 0
        self.succeeded = 0
        self.retried = 0
        self.rejected: dict[str, int] = {}  # reason -> messages rejected or requeued
        self.revoked = 0
        self.failed: dict[str, int] = {}  # exception class name -> failures
        self.cpu = 0.0  # seconds, charged when the children's usage is read (recorder.settle)
        self.max_rss = 0  # bytes, the largest resident size seen at such a read
        self.runtime = BucketCounts(RUNTIME_BUCKETS)
        self.queue_wait = BucketCounts(WAIT_BUCKETS)


class TaskSeriesCollector(Collector):
    """Exposes the series of one worker under the usual names (``_total`` for counters).

    ``before_collect`` runs first on every scrape: the recorder charges the CPU it has not
    yet read, so what is scraped is complete as of the scrape.
    """

    def __init__(
        self,
        series: Callable[[], Iterable[TaskSeries]],
        active: Callable[[], int],
        hostname: str,
        before_collect: Callable[[], None] | None = None,
    ) -> None:
        self._series = series
        self._active = active
        self._hostname = hostname
        self._before_collect = before_collect

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (the registry checks names on register)."""
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        """Every family with the current value of every task kind."""
        if self._before_collect is not None:
            self._before_collect()
        return self._families(list(self._series()))

    def _families(self, all_series: list[TaskSeries]) -> Iterator[Metric]:
        for attribute, name, documentation in COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=LABELS)
            for series in all_series:
                counter.add_metric(series.labels, getattr(series, attribute))
            yield counter
        failed = CounterMetricFamily(
            "celery_task_failed", "Tasks that failed for good", labels=(*LABELS, "exception")
        )
        for series in all_series:
            for exception, count in list(series.failed.items()):
                failed.add_metric((*series.labels, exception), count)
        yield failed
        rejected = CounterMetricFamily(
            "celery_task_rejected",
            "Messages rejected (dead-lettered: not runnable) or requeued (child lost), by reason",
            labels=(*LABELS, "reason"),
        )
        for series in all_series:
            for reason, count in list(series.rejected.items()):
                rejected.add_metric((*series.labels, reason), count)
        yield rejected
        yield self._histogram(
            "celery_task_runtime", "Task run time (seconds)", all_series, "runtime"
        )
        yield self._histogram(
            "celery_task_queue_wait_time",
            "Publish to start, ETA/countdown excluded (seconds)",
            all_series,
            "queue_wait",
        )
        memory = GaugeMetricFamily(
            "celery_task_max_rss_bytes",
            "Largest resident memory of a process that ran this kind of task",
            labels=LABELS,
        )
        for series in all_series:
            memory.add_metric(series.labels, series.max_rss)
        yield memory
        active = GaugeMetricFamily(
            "celery_worker_tasks_active", "Tasks running now", labels=("hostname",)
        )
        active.add_metric((self._hostname,), self._active())
        yield active

    @staticmethod
    def _histogram(
        name: str, documentation: str, all_series: list[TaskSeries], attribute: str
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=LABELS)
        for series in all_series:
            counts: Any = getattr(series, attribute)
            family.add_metric(series.labels, counts.cumulative(), counts.total)
        return family
