"""The recorder's per-task bookkeeping: plain-number series, child usage read once per batch.

Real processes stand in for pool children: what is read is their real ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram

from personal_assistant.workers.app import WorkerApp
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.metrics.child_usage import ChildUsage
from personal_assistant.workers.metrics.hook import MetricsHook
from personal_assistant.workers.metrics.recorder import TaskMetricsRecorder
from personal_assistant.workers.metrics.series import RUNTIME_BUCKETS, BucketCounts

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child that burns 0.3 s of CPU, then sleeps until killed (yielded once it runs Python,
    so its memory is an interpreter's, not a process half-way through exec)."""
    code = "print('up', flush=True)\n" + BURN.format(seconds=0.3) + "time.sleep(60)\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"up\n"
    yield process
    process.stdout.close()
    process.kill()
    process.wait()


def sample(recorder: TaskMetricsRecorder, metric: str, **labels: str) -> float | None:
    return recorder.registry.get_sample_value(metric, labels)


def test_a_task_is_charged_the_cpu_its_child_used_since_the_previous_task_ended(
    child: subprocess.Popen[bytes],
) -> None:
    usage = ChildUsage()
    usage.begin(child.pid)  # the child's start-up is nobody's task
    time.sleep(0.6)  # the burn happens "during the task"
    ended = usage.end(child.pid)
    assert ended is not None
    cpu, rss = ended
    assert 0.2 <= cpu <= 0.6
    assert rss > 1_000_000
    again = usage.end(child.pid)  # the child now only sleeps: the next task used nothing
    assert again is not None and again[0] < 0.05


def test_a_child_that_is_gone_reports_nothing_and_is_forgotten(
    child: subprocess.Popen[bytes],
) -> None:
    usage = ChildUsage()
    usage.begin(child.pid)
    child.kill()
    child.wait()  # reaped: its open stat file now fails, even if the pid is reused later
    assert usage.end(child.pid) is None
    assert usage.end(child.pid) is None  # and nothing stale was kept


def test_open_files_of_recycled_children_are_bounded() -> None:
    usage = ChildUsage(size=3)
    processes = [subprocess.Popen(["sleep", "30"]) for _ in range(5)]
    try:
        for process in processes:
            usage.begin(process.pid)
        assert len(usage._files) == 3  # the two oldest were closed
        assert list(usage._files) == [p.pid for p in processes[2:]]
    finally:
        usage.close()
        for process in processes:
            process.kill()
            process.wait()
    assert usage._files == {}


LABELS = {"name": "tests.noop", "hostname": "w1@host", "queue_name": "file_tasks"}


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


def test_failures_are_counted_per_exception_class() -> None:
    recorder = TaskMetricsRecorder("w1@host")
    series = recorder.series("tests.noop", "file_tasks")
    series.failed["ValueError"] = 2
    series.failed["KeyError"] = 1
    value = sample(recorder, "celery_task_failed_total", exception="ValueError", **LABELS)
    assert value == 2
    assert sample(recorder, "celery_task_failed_total", exception="KeyError", **LABELS) == 1


def test_rejections_are_counted_per_reason() -> None:
    recorder = TaskMetricsRecorder("w1@host")
    series = recorder.series("tests.noop", "file_tasks")
    series.rejected["requeued"] = 3
    series.rejected["bad_eta"] = 1

    assert sample(recorder, "celery_task_rejected_total", reason="requeued", **LABELS) == 3
    assert sample(recorder, "celery_task_rejected_total", reason="bad_eta", **LABELS) == 1


def test_a_rejected_message_reported_by_the_worker_is_counted_in_its_apps_recorder(
    clean_env: pytest.MonkeyPatch,
) -> None:
    recorder = TaskMetricsRecorder("w1@host")
    app = WorkerApp(load_settings(), set_as_current=False)
    app.metrics_recorder = recorder  # as MetricsHook installs it at worker init
    try:
        MetricsHook(app).on_message_rejected(
            reason="unknown_task", task_name="tests.noop", queue="file_tasks", task_id="x"
        )
    finally:
        app.close()

    assert sample(recorder, "celery_task_rejected_total", reason="unknown_task", **LABELS) == 1


def test_histogram_samples_match_prometheus_clients_own_histogram() -> None:
    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 1.0, 7.0, 3599.0, 3600.0, 5000.0]
    ours = BucketCounts(RUNTIME_BUCKETS)
    registry = CollectorRegistry()
    theirs = Histogram("h", "h", buckets=RUNTIME_BUCKETS, registry=registry)
    for value in values:
        ours.observe(value)
        theirs.observe(value)
    expected = [
        (s.labels["le"], s.value)
        for m in registry.collect()
        for s in m.samples
        if s.name == "h_bucket"
    ]
    assert ours.cumulative() == expected
    assert ours.total == pytest.approx(sum(values))


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
