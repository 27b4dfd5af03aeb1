"""Behaviour of the task metrics collector: the seed's API, its aggregates and its bounds."""

from __future__ import annotations

import gc
import math
import os
import random
import statistics
import threading
import time
import tracemalloc
import types
import warnings
from dataclasses import fields
from datetime import UTC, datetime

import psutil
import pytest

from personal_assistant.workers.metrics import collector as metrics
from personal_assistant.workers.metrics.collector import (
    FINISHED_WINDOW,
    OTHER_TASK_NAME,
    MetricsCollector,
    TaskMetrics,
)

MIB = 1024 * 1024


class FakeClock:
    """A perf_counter the test moves by hand, so durations are exact."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Durations measured by the collector come from this clock (CPU time stays real)."""
    fake = FakeClock()
    monkeypatch.setattr(
        metrics, "time", types.SimpleNamespace(perf_counter=fake, process_time=time.process_time)
    )
    return fake


def run(
    collector: MetricsCollector,
    clock: FakeClock,
    task_id: str,
    seconds: float,
    *,
    name: str = "job",
    status: str = "completed",
    queue_time: float | None = None,
) -> None:
    """One task of `seconds` on the fake clock, ended with `status`."""
    collector.start_task(task_id, name, queue_time=queue_time)
    clock.now += seconds
    collector.end_task(task_id, status)


class TestMetricsCollector:
    """Test enhanced metrics collection functionality (the seed's tests, as written)."""

    def test_start_task(self) -> None:
        """Test starting task metrics collection."""
        collector = MetricsCollector()
        task_id = collector.start_task("test_task_123", "test_task")

        assert task_id in collector.metrics
        assert collector.metrics[task_id].task_name == "test_task"
        assert collector.metrics[task_id].status == "running"

    def test_end_task(self) -> None:
        """Test ending task metrics collection."""
        collector = MetricsCollector()
        task_id = collector.start_task("test_task_123", "test_task")

        # Wait a moment to ensure different timestamps
        time.sleep(0.1)

        collector.end_task(task_id, "completed")

        metrics = collector.metrics[task_id]
        assert metrics.status == "completed"
        assert metrics.end_time is not None
        assert metrics.execution_time is not None
        assert metrics.execution_time > 0

    def test_performance_summary(self) -> None:
        """Test performance summary generation."""
        collector = MetricsCollector()

        # Simulate multiple task executions
        for i in range(3):
            task_id = f"task_{i}"
            collector.start_task(task_id, "test_task")
            collector.end_task(task_id, "completed")

        summary = collector.get_performance_summary()
        assert "test_task" in summary
        assert summary["test_task"]["count"] == 3


class TestTaskMetrics:
    def test_a_record_keeps_the_seeds_fields_and_defaults(self) -> None:
        start = datetime.now(UTC)
        record = TaskMetrics(task_id="t1", task_name="job", start_time=start)
        seed_fields = [
            "task_id", "task_name", "start_time", "end_time", "execution_time", "memory_usage",
            "cpu_usage", "status", "error", "retry_count", "queue_time",
        ]  # fmt: skip
        assert [f.name for f in fields(TaskMetrics)][: len(seed_fields)] == seed_fields
        assert (record.status, record.retry_count, record.end_time) == ("running", 0, None)
        assert (record.cpu_time, record.memory_rss_bytes, record.memory_delta_bytes) == (
            None,
            None,
            None,
        )

    def test_a_finished_record_has_this_processs_cpu_time_and_rss(self) -> None:
        collector = MetricsCollector()
        collector.start_task("t1", "job", queue_time=0.25, retry_count=2)
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:  # burn 50 ms of CPU
            pass
        collector.end_task("t1", "failed", error="ValueError: boom")

        record = collector.metrics["t1"]
        assert record.start_time.tzinfo is UTC
        assert record.end_time is not None and record.end_time >= record.start_time
        assert record.execution_time is not None
        assert record.cpu_time is not None and 0.045 <= record.cpu_time <= 1.0
        assert record.cpu_usage == pytest.approx(record.cpu_time / record.execution_time * 100)
        assert record.memory_rss_bytes is not None
        rss_now = psutil.Process().memory_info().rss
        assert abs(record.memory_rss_bytes - rss_now) < 50 * MIB
        assert record.memory_usage == pytest.approx(record.memory_rss_bytes / MIB)
        assert record.memory_delta_bytes is not None
        assert (record.status, record.error) == ("failed", "ValueError: boom")
        assert (record.queue_time, record.retry_count) == (0.25, 2)

    def test_resource_fields_stay_none_when_sampling_is_off(self) -> None:
        collector = MetricsCollector(sample_resources=False)
        collector.start_task("t1", "job")
        collector.end_task("t1")
        record = collector.metrics["t1"]
        assert record.execution_time is not None
        assert (record.cpu_time, record.cpu_usage, record.memory_usage) == (None, None, None)
        assert (record.memory_rss_bytes, record.memory_delta_bytes) == (None, None)
        assert collector.get_performance_summary()["job"]["avg_cpu_time"] is None

    def test_durations_come_from_the_monotonic_clock_not_the_wall_clock(
        self, clock: FakeClock
    ) -> None:
        collector = MetricsCollector()
        run(collector, clock, "t1", 2.5)
        assert collector.metrics["t1"].execution_time == 2.5

    def test_rss_in_a_forked_child_is_the_childs_own(self) -> None:
        collector = MetricsCollector()
        collector.start_task("warm", "job")  # the probe is in use before the fork
        collector.end_task("warm")
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():  # 3.12+ warns about fork in threaded processes
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: grow by 64 MB during a task, report the measured growth
            try:
                collector.start_task("child", "job")
                ballast = b"\x01" * (64 * MIB)
                collector.end_task("child")
                os.write(write_end, str(collector.metrics["child"].memory_delta_bytes).encode())
                del ballast
            finally:
                os._exit(0)
        os.close(write_end)
        reported = os.read(read_end, 100).decode()
        os.close(read_end)
        os.waitpid(pid, 0)
        assert int(reported) >= 60 * MIB  # read through the parent's /proc entry, it would be ~0


class TestSummary:
    def test_count_min_max_total_and_average_are_exact(self, clock: FakeClock) -> None:
        collector = MetricsCollector()
        for i, seconds in enumerate([0.5, 1.0, 4.5]):
            run(collector, clock, f"t{i}", seconds)
        summary = collector.get_performance_summary()["job"]
        assert (summary["count"], summary["min_time"], summary["max_time"]) == (3, 0.5, 4.5)
        assert summary["total_time"] == pytest.approx(6.0)
        assert summary["avg_time"] == pytest.approx(2.0)

    def test_quantiles_are_within_two_percent_of_the_exact_percentiles(
        self, clock: FakeClock
    ) -> None:
        rng = random.Random(1)
        samples = [rng.lognormvariate(-3.0, 1.0) for _ in range(10_000)]
        collector = MetricsCollector()
        for i, seconds in enumerate(samples):
            run(collector, clock, f"t{i}", seconds)
        summary = collector.get_performance_summary()["job"]
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        for key, exact in (("p50", cuts[49]), ("p95", cuts[94]), ("p99", cuts[98])):
            assert summary[key] == pytest.approx(exact, rel=0.02), key

    def test_quantiles_stay_between_the_exact_min_and_max_outside_the_histograms_range(
        self, clock: FakeClock
    ) -> None:
        collector = MetricsCollector()
        for i in range(10):
            run(collector, clock, f"long{i}", 3 * 86_400.0)  # past the last bucket (a day)
        run(collector, clock, "instant", 0.0)  # below the first (1 us)
        summary = collector.get_performance_summary()["job"]
        assert (summary["min_time"], summary["max_time"]) == (0.0, 3 * 86_400.0)
        assert summary["p50"] == summary["p99"] == 3 * 86_400.0
        fast = MetricsCollector()
        for i in range(10):
            run(fast, clock, f"t{i}", 2e-7)
        summary = fast.get_performance_summary()["job"]
        assert summary["p50"] == summary["min_time"] == pytest.approx(2e-7, rel=1e-2)

    def test_failures_and_retries_are_counted_and_a_retry_is_not_an_end(
        self, clock: FakeClock
    ) -> None:
        collector = MetricsCollector()
        outcomes = ["completed"] * 6 + ["failed"] * 2 + ["retry"] * 5
        for i, status in enumerate(outcomes):
            run(collector, clock, f"t{i}", 0.1, status=status)
        summary = collector.get_performance_summary()["job"]
        assert (summary["succeeded"], summary["failed"], summary["retries"]) == (6, 2, 5)
        assert summary["success_rate"] == pytest.approx(6 / 8)
        assert summary["count"] == 13  # every attempt took worker time

    def test_celery_state_names_count_as_success_and_failure(self, clock: FakeClock) -> None:
        collector = MetricsCollector()
        for i, status in enumerate(["SUCCESS", "FAILURE", "RETRY", "Completed"]):
            run(collector, clock, f"t{i}", 0.1, status=status)
        summary = collector.get_performance_summary()["job"]
        assert (summary["succeeded"], summary["failed"], summary["retries"]) == (2, 1, 1)
        assert collector.metrics["t0"].status == "SUCCESS"

    def test_other_statuses_are_recorded_as_given_and_counted_apart(self, clock: FakeClock) -> None:
        collector = MetricsCollector()
        run(collector, clock, "t1", 0.1, status="revoked")
        run(collector, clock, "t2", 0.1, status="timed_out")
        summary = collector.get_performance_summary()["job"]
        assert collector.metrics["t2"].status == "timed_out"
        assert (summary["other"], summary["succeeded"], summary["failed"]) == (2, 0, 0)
        assert summary["success_rate"] is None

    def test_success_rate_is_none_until_a_task_succeeds_or_fails(self, clock: FakeClock) -> None:
        collector = MetricsCollector()
        run(collector, clock, "t1", 0.1, status="retry")
        assert collector.get_performance_summary()["job"]["success_rate"] is None
        run(collector, clock, "t1", 0.1, status="failed")
        assert collector.get_performance_summary()["job"]["success_rate"] == 0.0

    def test_queue_time_is_averaged_over_the_tasks_that_report_it(self, clock: FakeClock) -> None:
        collector = MetricsCollector()
        run(collector, clock, "t1", 0.1, queue_time=1.0)
        run(collector, clock, "t2", 0.1, queue_time=3.0)
        run(collector, clock, "t3", 0.1)
        assert collector.get_performance_summary()["job"]["avg_queue_time"] == 2.0

    def test_cpu_time_and_peak_memory_are_aggregated(self) -> None:
        collector = MetricsCollector()
        for i in range(3):
            collector.start_task(f"t{i}", "job")
            deadline = time.process_time() + 0.02
            while time.process_time() < deadline:
                pass
            collector.end_task(f"t{i}")
        summary = collector.get_performance_summary()["job"]
        cpu_times = [collector.metrics[f"t{i}"].cpu_time for i in range(3)]
        assert summary["avg_cpu_time"] == pytest.approx(sum(c or 0.0 for c in cpu_times) / 3)
        assert summary["avg_cpu_time"] >= 0.019
        rss = [collector.metrics[f"t{i}"].memory_rss_bytes or 0 for i in range(3)]
        assert summary["max_memory"] == max(rss) > 0

    def test_each_task_name_has_its_own_aggregates(self, clock: FakeClock) -> None:
        collector = MetricsCollector()
        run(collector, clock, "a", 1.0, name="email.send")
        run(collector, clock, "b", 2.0, name="ai.summarise", status="failed")
        summary = collector.get_performance_summary()
        assert summary["email.send"]["total_time"] == 1.0
        assert (summary["ai.summarise"]["failed"], summary["ai.summarise"]["count"]) == (1, 1)

    def test_a_celery_retry_under_the_same_id_replaces_its_finished_record(
        self, clock: FakeClock
    ) -> None:
        collector = MetricsCollector()
        run(collector, clock, "t1", 0.1, status="retry")
        collector.start_task("t1", "job", retry_count=1)
        assert (collector.metrics["t1"].status, collector.metrics["t1"].retry_count) == (
            "running",
            1,
        )
        assert len(collector.metrics) == 1 and list(collector.metrics) == ["t1"]
        clock.now += 0.2
        collector.end_task("t1")
        summary = collector.get_performance_summary()["job"]
        assert (summary["retries"], summary["succeeded"], summary["lost"]) == (1, 1, 0)


class TestBounds:
    def test_finished_records_past_the_window_are_evicted_but_still_counted(
        self, clock: FakeClock
    ) -> None:
        collector = MetricsCollector(finished_window=3)
        for i in range(10):
            run(collector, clock, f"t{i}", 1.0)
        assert list(collector.metrics) == ["t7", "t8", "t9"]
        assert "t0" not in collector.metrics
        summary = collector.get_performance_summary()["job"]
        assert (summary["count"], summary["total_time"]) == (10, 10.0)

    def test_running_tasks_past_the_cap_are_evicted_oldest_first_and_counted_lost(self) -> None:
        collector = MetricsCollector(max_running=2)
        for i in range(5):
            collector.start_task(f"t{i}", "job")
        assert list(collector.metrics) == ["t3", "t4"]
        assert collector.lost_tasks == 3
        assert collector.get_performance_summary()["job"]["lost"] == 3
        collector.end_task("t0")  # its end comes after all: ignored, not double counted
        assert collector.unknown_ends == 1
        assert collector.get_performance_summary()["job"]["count"] == 0

    def test_a_summary_of_only_lost_tasks_has_no_timings(self) -> None:
        collector = MetricsCollector(max_running=1)
        collector.start_task("t1", "job")
        collector.start_task("t2", "job")
        summary = collector.get_performance_summary()["job"]
        assert (summary["count"], summary["lost"], summary["avg_time"], summary["p50"]) == (
            0,
            1,
            None,
            None,
        )

    def test_starting_an_id_that_is_still_running_counts_the_first_run_lost(self) -> None:
        collector = MetricsCollector()
        collector.start_task("t1", "job")
        collector.start_task("t1", "job")
        assert len(collector.metrics) == 1
        assert collector.lost_tasks == 1

    def test_task_names_past_the_cap_are_aggregated_under_other(self, clock: FakeClock) -> None:
        collector = MetricsCollector(max_task_names=3)
        for i in range(10):
            run(collector, clock, f"t{i}", 1.0, name=f"name-{i}")
        run(collector, clock, "again", 1.0, name="name-0")  # a known name keeps its own entry
        summary = collector.get_performance_summary()
        assert set(summary) == {"name-0", "name-1", "name-2", OTHER_TASK_NAME}
        assert summary[OTHER_TASK_NAME]["count"] == 7
        assert summary["name-0"]["count"] == 2
        assert collector.metrics["t9"].task_name == "name-9"  # the record keeps its real name

    def test_ending_an_unknown_task_id_is_ignored_and_counted(self) -> None:
        collector = MetricsCollector()
        collector.end_task("never-started", "failed")
        assert collector.unknown_ends == 1
        assert "never-started" not in collector.metrics
        assert collector.get_performance_summary() == {}

    def test_ending_a_task_twice_counts_the_second_end_as_unknown(self, clock: FakeClock) -> None:
        collector = MetricsCollector()
        run(collector, clock, "t1", 1.0, status="failed")
        collector.end_task("t1", "failed")  # the seed's postrun + failure double end
        assert collector.unknown_ends == 1
        assert collector.get_performance_summary()["job"]["failed"] == 1

    @pytest.mark.parametrize("bound", ["finished_window", "max_running", "max_task_names"])
    def test_a_bound_below_one_is_refused(self, bound: str) -> None:
        with pytest.raises(ValueError, match=bound):
            MetricsCollector(**{bound: 0})  # type: ignore[arg-type]

    def test_memory_stays_flat_over_200000_unique_tasks(self) -> None:
        collector = MetricsCollector(sample_resources=False)
        names = [f"tasks.job_{i}" for i in range(10)]
        task_ids = [f"{i:032x}" for i in range(200_000)]  # made before tracing: not growth

        def churn(start: int, stop: int) -> None:
            for i in range(start, stop):
                task_id = task_ids[i]
                collector.start_task(task_id, names[i % 10])
                collector.end_task(task_id, "failed" if i % 7 == 0 else "completed")

        tracemalloc.start()
        try:
            churn(0, 10_000)
            gc.collect()
            warm = tracemalloc.get_traced_memory()[0]
            churn(10_000, 200_000)
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - warm
        finally:
            tracemalloc.stop()
        assert len(collector.metrics) == FINISHED_WINDOW
        assert growth < 1 * MIB, f"grew {growth} bytes"
        assert sum(s["count"] for s in collector.get_performance_summary().values()) == 200_000


class TestConcurrency:
    def test_threads_starting_and_ending_tasks_at_once_lose_nothing(self) -> None:
        collector = MetricsCollector(sample_resources=False)

        def worker(n: int) -> None:
            for i in range(5_000):
                collector.start_task(f"{n}-{i}", "job")
                collector.end_task(f"{n}-{i}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        summary = collector.get_performance_summary()["job"]
        assert (summary["count"], summary["succeeded"]) == (40_000, 40_000)
        assert (collector.lost_tasks, collector.unknown_ends) == (0, 0)
        assert math.isclose(summary["success_rate"], 1.0)


def test_an_execution_observed_after_it_ended_counts_in_the_summaries_only() -> None:
    collector = MetricsCollector(sample_resources=False)
    collector.observe("tasks.add", 0.5, queue_time=0.2, cpu_time=0.25, memory_rss_bytes=2**20)
    collector.observe("tasks.add", 1.5, status="failed")
    summary = collector.get_performance_summary()["tasks.add"]
    assert (summary["count"], summary["succeeded"], summary["failed"]) == (2, 1, 1)
    assert summary["total_time"] == pytest.approx(2.0)
    assert summary["avg_cpu_time"] == pytest.approx(0.25)
    assert summary["avg_queue_time"] == pytest.approx(0.2)
    assert summary["max_memory"] == 2**20
    assert len(collector.metrics) == 0  # no record is built or kept
