"""A pool child's CPU and memory, read from its real ``/proc/<pid>/stat``: charged to the task
it ran, forgotten once the child is gone, with a bounded number of stat files held open."""

from __future__ import annotations

import subprocess
import time

from personal_assistant.workers.metrics.child_usage import ChildUsage


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
