"""The worker's main process stays flat under load, with the default (one-hour) time limits.

Each task arms its soft time limit as a timer in the main process and cancels it when it ends;
kombu keeps a cancelled timer until it falls due (an hour later), which grew the main process by
about 600 bytes per task (hooks/timer_heap.py). The worker sweeps them every
``TIMER_SWEEP_INTERVAL_S``: the test samples the main process's RSS one second after two
successive sweeps, while tasks keep flowing, and compares the growth with the tasks run between
the samples.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.hooks.timer_heap import TIMER_SWEEP_INTERVAL_S
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from tests.support.worker import WorkerProcess, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# Enough no-op tasks that the queue does not run dry before the first sample (11 s after the
# worker is ready; a worker alone on this machine drains up to 1,500/s). Running dry before
# the second sample is fine: what counts is the tasks run between the two.
TASKS = 25_000
# Growth allowed per task run between the samples. Before the sweep: 608 bytes (measured over
# 100,000 tasks); after it, 7 bytes (measured from 5,000 to 50,000 tasks).
MAX_BYTES_PER_TASK = 100
# The queue is filled by a process of its own: this test process has built many apps by now, and
# every publish would run through all their hooks (Celery's signals are process-wide).
FILL = f"""
from personal_assistant.workers.celery_app import app
from tests.support import tasks
with app.producer_or_acquire() as producer:
    for _ in range({TASKS}):
        app.send_task("tests.noop", queue="{c.FILE_QUEUE}", producer=producer)
"""
# Tasks the window must see for the comparison to mean something (600 B x 2,000 = 1.2 MB).
MIN_TASKS_IN_WINDOW = 2_000


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS, /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_the_main_process_does_not_grow_with_the_tasks_it_runs(
    redis_url: str,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    subprocess.run([sys.executable, "-c", FILL], env=worker_env(redis_url), check=True, timeout=120)
    worker = start_worker(
        [c.FILE_QUEUE],
        concurrency=2,
        env={"WORKER_MAX_TASKS_PER_CHILD": "1000000"},  # default time limits: one hour
        extra_args=["--without-heartbeat"],
    )
    ready = time.monotonic()
    assert worker.process is not None

    def sample_after_sweep(number: int) -> tuple[int, int]:
        # Sweeps run every interval from the worker's ready: one second after the number-th.
        time.sleep(max(0.0, ready + number * TIMER_SWEEP_INTERVAL_S + 1.0 - time.monotonic()))
        left = queue_depths(redis_client, [c.FILE_QUEUE])[c.FILE_QUEUE]
        return rss_bytes(worker.process.pid), TASKS - left  # type: ignore[union-attr]

    rss_first, done_first = sample_after_sweep(1)
    rss_second, done_second = sample_after_sweep(2)
    ran = done_second - done_first
    assert ran >= MIN_TASKS_IN_WINDOW, f"only {ran} tasks ran between the samples"
    growth = rss_second - rss_first
    assert growth <= ran * MAX_BYTES_PER_TASK, (
        f"main process grew {growth} bytes over {ran} tasks ({growth / ran:.0f} B/task)"
    )
