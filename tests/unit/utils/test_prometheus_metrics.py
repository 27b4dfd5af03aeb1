"""The recorder's per-task bookkeeping: series looked up once, child usage from open /proc files.

Real processes stand in for pool children: what is read is their real ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from personal_assistant.workers.utils.prometheus_metrics import ChildUsage, TaskMetricsRecorder

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child that burns 0.3 s of CPU, then sleeps until killed."""
    code = BURN.format(seconds=0.3) + "time.sleep(60)\n"
    process = subprocess.Popen([sys.executable, "-c", code])
    yield process
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


def test_a_task_kinds_series_are_looked_up_once_and_count_into_the_registry(
    child: subprocess.Popen[bytes],
) -> None:
    recorder = TaskMetricsRecorder("w1@host")
    series = recorder.series("tests.noop", "file_tasks")
    assert recorder.series("tests.noop", "file_tasks") is series
    labels = {"name": "tests.noop", "hostname": "w1@host", "queue_name": "file_tasks"}
    for _ in range(3):
        recorder.on_received(series)
        recorder.on_started(series, wait=0.01, pid=child.pid)
        series.succeeded.inc()
        recorder.on_finished(series, runtime=0.002, pid=child.pid)
    assert sample(recorder, "celery_task_received_total", **labels) == 3
    assert sample(recorder, "celery_task_started_total", **labels) == 3
    assert sample(recorder, "celery_task_succeeded_total", **labels) == 3
    assert sample(recorder, "celery_task_runtime_count", **labels) == 3
    assert sample(recorder, "celery_task_queue_wait_time_count", **labels) == 3
    assert (sample(recorder, "celery_task_max_rss_bytes", **labels) or 0) > 1_000_000
    assert sample(recorder, "celery_worker_tasks_active", hostname="w1@host") == 0
