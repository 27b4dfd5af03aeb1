"""Memory and per-call cost of MetricsCollector over a million tasks, against the seed's collector.

Target: at most 5 MB of growth between the end of a 10,000-task warm-up and the end of
1,000,000 tasks, measured by tracemalloc (RSS via psutil is reported beside it, and also held
to the target, in a run without tracemalloc). The anchor is the seed's own collector, copied
below as ``SeedMetricsCollector`` and run in the same process: it keeps every record and every
duration, about 400 bytes per task, so the same million tasks would cost it ~400 MB.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psutil

from personal_assistant.workers.metrics.collector import FINISHED_WINDOW, MetricsCollector
from tests.performance.conftest import Figure, record

N = 1_000_000
WARMUP = 10_000
N_RESOURCES = 100_000  # with CPU and RSS sampling on: ~3x the cost, so fewer
N_SEED = 100_000  # the seed keeps everything: a million would take ~400 MB
TARGET_GROWTH = 5 * 1024 * 1024
NAMES = [f"personal_assistant.workers.tasks.bench.task_{i}" for i in range(10)]
MIB = 1024 * 1024
ROUNDS = 3


@dataclass
class SeedTaskMetrics:
    """The seed's TaskMetrics, as written."""

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


class SeedMetricsCollector:
    """The seed's sketch (Step 1.2), with ``datetime.utcnow()`` -> ``datetime.now(UTC)`` only:
    utcnow is deprecated and the test run treats warnings as errors."""

    def __init__(self) -> None:
        self.metrics: dict[str, SeedTaskMetrics] = {}
        self.aggregate_stats: defaultdict[str, list[float]] = defaultdict(list)
        self.lock = threading.Lock()

    def start_task(self, task_id: str, task_name: str) -> str:
        with self.lock:
            metrics = SeedTaskMetrics(
                task_id=task_id, task_name=task_name, start_time=datetime.now(UTC)
            )
            self.metrics[task_id] = metrics
            return task_id

    def end_task(self, task_id: str, status: str = "completed", error: str | None = None) -> None:
        with self.lock:
            if task_id in self.metrics:
                metrics = self.metrics[task_id]
                metrics.end_time = datetime.now(UTC)
                metrics.execution_time = (metrics.end_time - metrics.start_time).total_seconds()
                metrics.status = status
                metrics.error = error
                self.aggregate_stats[metrics.task_name].append(metrics.execution_time)

    def get_performance_summary(self) -> dict[str, Any]:
        with self.lock:
            summary = {}
            for task_name, times in self.aggregate_stats.items():
                if times:
                    summary[task_name] = {
                        "count": len(times),
                        "avg_time": sum(times) / len(times),
                        "min_time": min(times),
                        "max_time": max(times),
                        "total_time": sum(times),
                    }
            return summary


class Collector(Protocol):
    def start_task(self, task_id: str, task_name: str) -> str: ...
    def end_task(self, task_id: str, status: str = ..., error: str | None = ...) -> None: ...


def churn(collector: Collector, start: int, stop: int) -> None:
    """Tasks ``start..stop`` with unique ids over ten names: 5 % fail, 2 % retry."""
    for i in range(start, stop):
        task_id = f"{i:032x}"  # the size of a Celery uuid without dashes
        collector.start_task(task_id, NAMES[i % 10])
        status = "failed" if i % 20 == 0 else "retry" if i % 50 == 1 else "completed"
        collector.end_task(task_id, status, "boom" if status == "failed" else None)


def traced_growth(collector: Collector, total: int) -> tuple[int, int]:
    """Bytes held after ``total`` tasks minus those after the warm-up, and the traced peak."""
    tracemalloc.start()
    try:
        churn(collector, 0, WARMUP)
        gc.collect()
        warm = tracemalloc.get_traced_memory()[0]
        churn(collector, WARMUP, total)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current - warm, peak


def timed_run(collector: Collector, total: int) -> tuple[float, int]:
    """Microseconds per start+end pair after the warm-up, and RSS growth since it (no tracing)."""
    process = psutil.Process()
    churn(collector, 0, WARMUP)
    gc.collect()
    rss_warm = process.memory_info().rss
    started = time.perf_counter()
    churn(collector, WARMUP, total)
    elapsed = time.perf_counter() - started
    gc.collect()
    return elapsed / (total - WARMUP) * 1e6, process.memory_info().rss - rss_warm


def test_metrics_memory_stays_flat_over_a_million_tasks() -> None:
    collector = MetricsCollector(sample_resources=False)
    growth, peak = traced_growth(collector, N)
    summary = collector.get_performance_summary()
    assert sum(s["count"] for s in summary.values()) == N
    assert len(collector.metrics) == FINISHED_WINDOW
    record(
        Figure(
            benchmark="metrics memory",
            measure=f"tracemalloc growth over {N:,} tasks",
            ours=growth / MIB,
            unit="MiB",
            target=f"<= {TARGET_GROWTH / MIB:.0f} MiB",
            met=growth <= TARGET_GROWTH,
            detail=(
                f"growth after a {WARMUP:,}-task warm-up {growth / 1024:.1f} KiB "
                f"({growth / (N - WARMUP):.3f} B/task), traced peak {peak / MIB:.2f} MiB"
            ),
        )
    )
    assert growth <= TARGET_GROWTH


def test_metrics_per_call_cost_and_rss_growth() -> None:
    per_pair, rss_growth = timed_run(MetricsCollector(sample_resources=False), N)
    per_pair_res, rss_growth_res = timed_run(MetricsCollector(), N_RESOURCES)
    record(
        Figure(
            benchmark="metrics memory",
            measure=f"RSS growth over {N:,} tasks, no tracing",
            ours=rss_growth / MIB,
            unit="MiB",
            target=f"<= {TARGET_GROWTH / MIB:.0f} MiB",
            met=rss_growth <= TARGET_GROWTH,
            detail=f"after a {WARMUP:,}-task warm-up, sample_resources=False",
        )
    )
    record(
        Figure(
            benchmark="metrics memory",
            measure="cost per start+end, no resource sampling",
            ours=per_pair,
            unit="us",
            detail=f"n={N:,}: {per_pair / 2:.2f} us a call",
        )
    )
    record(
        Figure(
            benchmark="metrics memory",
            measure="cost per start+end, with CPU and RSS sampling",
            ours=per_pair_res,
            unit="us",
            detail=(
                f"n={N_RESOURCES:,}: {per_pair_res / 2:.2f} us a call, sampling "
                f"{per_pair_res - per_pair:.2f} us per pair; RSS growth after warm-up "
                f"{rss_growth_res / MIB:.2f} MiB"
            ),
        )
    )
    assert rss_growth <= TARGET_GROWTH


def test_seed_collector_grows_with_every_task_for_comparison() -> None:
    seed = SeedMetricsCollector()
    growth, _ = traced_growth(seed, N_SEED)
    assert len(seed.metrics) == N_SEED
    del seed
    seed_times, ours_times, seed_rss = [], [], []
    for _ in range(ROUNDS):  # alternate, so drift of the machine hits both alike
        per_pair, rss = timed_run(SeedMetricsCollector(), N_SEED)
        seed_times.append(per_pair)
        seed_rss.append(rss)
        ours_times.append(timed_run(MetricsCollector(sample_resources=False), N_SEED)[0])
    per_task = growth / (N_SEED - WARMUP)
    record(
        Figure(
            benchmark="metrics memory",
            measure="the seed collector's growth per task (the anchor keeps every task)",
            ours=per_task,
            unit="B/task",
            target="> 100 B/task",
            met=per_task > 100,
            detail=(
                f"seed MetricsCollector n={N_SEED:,}: tracemalloc growth {growth / MIB:.1f} MiB "
                f"(a million tasks: ~{per_task * N / MIB:.0f} MiB; ours stays flat), RSS growth "
                f"{statistics.median(seed_rss) / MIB:.1f} MiB"
            ),
        )
    )
    record(
        Figure(
            benchmark="metrics memory",
            measure="cost per start+end, no resource sampling, vs the seed collector",
            ours=statistics.median(ours_times),
            unit="us",
            anchor=statistics.median(seed_times),
            anchor_name="seed MetricsCollector",
            ratio=statistics.median(ours_times) / statistics.median(seed_times),
            detail=f"median of {ROUNDS} alternating rounds of {N_SEED:,} tasks",
        )
    )
    assert per_task > 100  # the anchor really does keep every task
