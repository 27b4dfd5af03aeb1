"""The recorder's per-task bookkeeping: series looked up once, child usage read once per batch.

Real processes stand in for pool children: what is read is their real ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from personal_assistant.workers.metrics.recorder import TaskMetricsRecorder
from tests.support.recorder_samples import LABELS, sample


def run_tasks(recorder: TaskMetricsRecorder, pid: int, runtimes: list[float]) -> None:
    series = recorder.series("tests.noop", "file_tasks")
    for runtime in runtimes:
        series.received += 1
        recorder.task_started(series, wait=0.01, pid=pid)
        series.succeeded += 1
        recorder.task_ended(series, "completed", runtime, 0.01, pid)


def test_a_task_kinds_series_are_looked_up_once_and_scraped_under_the_usual_names(
    child: subprocess.Popen[bytes],
) -> None:
    recorder = TaskMetricsRecorder("w1@host")
    series = recorder.series("tests.noop", "file_tasks")
    assert recorder.series("tests.noop", "file_tasks") is series
    run_tasks(recorder, child.pid, [0.002] * 3)
    assert sample(recorder, "celery_task_received_total", **LABELS) == 3
    assert sample(recorder, "celery_task_started_total", **LABELS) == 3
    assert sample(recorder, "celery_task_succeeded_total", **LABELS) == 3
    assert sample(recorder, "celery_task_runtime_count", **LABELS) == 3
    assert sample(recorder, "celery_task_runtime_bucket", le="0.005", **LABELS) == 3
    assert sample(recorder, "celery_task_queue_wait_time_count", **LABELS) == 3
    assert (sample(recorder, "celery_task_max_rss_bytes", **LABELS) or 0) > 1_000_000
    assert sample(recorder, "celery_worker_tasks_active", hostname="w1@host") == 0


def test_cpu_is_read_once_per_batch_and_shared_by_run_time(
    child: subprocess.Popen[bytes],
) -> None:
    recorder = TaskMetricsRecorder("w1@host")
    long, short = recorder.series("tests.long", "q"), recorder.series("tests.short", "q")
    recorder.task_started(long, wait=None, pid=child.pid)  # the child's start-up is nobody's
    time.sleep(0.6)  # the child burns its 0.3 s of CPU "during" the two tasks below
    recorder.task_ended(long, "completed", 0.3, None, child.pid)
    recorder.task_started(short, wait=None, pid=child.pid)
    recorder.task_ended(short, "completed", 0.1, None, child.pid)
    assert long.cpu == short.cpu == 0  # not read yet: one read per batch, not per task
    recorder.settle()
    assert 0.2 <= long.cpu + short.cpu <= 0.6
    assert long.cpu == pytest.approx(3 * short.cpu)
    summary = recorder.collector.get_performance_summary()
    assert summary["tests.long"]["avg_cpu_time"] == pytest.approx(long.cpu)


def test_a_scrape_settles_what_ended_so_cpu_is_complete_when_scraped(
    child: subprocess.Popen[bytes],
) -> None:
    recorder = TaskMetricsRecorder("w1@host")
    series = recorder.series("tests.noop", "file_tasks")
    recorder.task_started(series, wait=None, pid=child.pid)
    time.sleep(0.6)
    recorder.task_ended(series, "completed", 0.5, None, child.pid)
    assert series.cpu == 0
    assert 0.2 <= (sample(recorder, "celery_task_cpu_seconds_total", **LABELS) or 0) <= 0.6


def test_a_child_at_its_last_allowed_task_is_read_before_it_exits(
    child: subprocess.Popen[bytes],
) -> None:
    recorder = TaskMetricsRecorder("w1@host", max_tasks_per_child=2)
    series = recorder.series("tests.noop", "file_tasks")
    recorder.task_started(series, wait=None, pid=child.pid)
    time.sleep(0.6)
    recorder.task_ended(series, "completed", 0.5, None, child.pid)
    assert series.cpu == 0
    recorder.task_started(series, wait=None, pid=child.pid)
    recorder.task_ended(series, "completed", 0.001, None, child.pid)  # its second and last
    assert 0.2 <= series.cpu <= 0.6  # read at once, without a scrape
    assert not recorder.usage.knows(child.pid)  # and forgotten: the pid may come back


def test_tasks_of_a_child_that_is_gone_are_counted_without_cpu(
    child: subprocess.Popen[bytes],
) -> None:
    recorder = TaskMetricsRecorder("w1@host")
    run_tasks(recorder, child.pid, [0.001])
    child.kill()
    child.wait()
    recorder.settle()
    summary = recorder.collector.get_performance_summary()["tests.noop"]
    assert summary["count"] == 1
    assert summary["avg_cpu_time"] is None
    assert sample(recorder, "celery_task_succeeded_total", **LABELS) == 1


def test_scrapes_during_a_burst_of_events_never_fail_and_end_exact() -> None:
    recorder = TaskMetricsRecorder("w1@host")
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        while not stop.is_set():
            try:
                recorder.registry.get_sample_value("celery_task_received_total", LABELS)
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for i in range(20_000):
            series = recorder.series(f"tests.kind{i % 50}", "file_tasks")
            series.received += 1
            recorder.task_started(series, wait=0.001, pid=None)
            series.succeeded += 1
            recorder.task_ended(series, "completed", 0.001, 0.001, None)
    finally:
        stop.set()
        scraper.join()
    assert errors == []
    total = sum(
        s.value
        for m in recorder.registry.collect()
        for s in m.samples
        if s.name == "celery_task_succeeded_total"
    )
    assert total == 20_000
    counts = recorder.collector.get_performance_summary()
    assert sum(c["count"] for c in counts.values()) == 20_000
