"""Resident memory of the worker's main process and of a producer over 100,000 no-op tasks,
against plain Celery (target: ours after 100,000 within 5 MiB of after 1,000, both).

Worker: the ``celery worker`` main process's VmRSS (/proc/PID/status) after 1,000 tasks, then
every 5,000 up to 100,000, ours with its defaults (metrics on, child recycling every
WORKER_MAX_TASKS_PER_CHILD, the 3600/3000 s time limits) against plain Celery
(tests/support/plain_noop_app.py) with the same time limits; c=2, prefetch 1, both workers side
by side to halve the time, each queue fed 5,000 tasks at a time (Redis holds one chunk, never
100,000 messages). Plain Celery's growth is recorded for the record: its main process keeps the
timers of cancelled time limits in its heap until they fall due, an hour later.

Producer: a process of its own (tests/support/producer_rss.py) publishing 100,000 tasks with
``send_task``, sampled the same way; plain Celery's ``apply_async`` beside it for the record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from celery import Celery

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.config import WorkerSettings
from tests.performance.conftest import Figure, record
from tests.support import plain_noop_app as plain
from tests.support.producer_rss import run_producer, vm_rss_kib
from tests.support.side_by_side import completion_times
from tests.support.side_by_side_apps import Side, ours_side, plain_side, start_together
from tests.support.worker import WorkerProcess

TOTAL = 100_000
FIRST = 1_000  # the baseline: imports, connections and caches are warm by then
STEP = 5_000  # a sample (and a chunk of tasks) every 5,000: twenty points for the plot
TARGET_MIB = 5.0
KIB_PER_MIB = 1024
OURS_QUEUE = c.FILE_QUEUE
PLAIN_QUEUE = "plain_memory"
# Ours as shipped: recycling children is one of its defaults (the main process forks their
# replacements), so it stays on; side_by_side_apps turns it off for throughput only.
OURS_DEFAULTS = {
    "WORKER_MAX_TASKS_PER_CHILD": str(
        WorkerSettings.model_fields["worker_max_tasks_per_child"].default
    )
}
PLAIN_LIMITS = {
    plain.TIME_LIMIT_ENV: str(c.TASK_TIME_LIMIT_S),
    plain.SOFT_TIME_LIMIT_ENV: str(c.TASK_SOFT_TIME_LIMIT_S),
}


@pytest.fixture
def plain_app(redis_url: str) -> Iterator[Celery]:
    """A plain Celery producer on the test broker."""
    app = plain.make_app(redis_url, PLAIN_QUEUE)
    yield app
    app.close()


def checkpoints() -> list[int]:
    """Tasks run at each sample: FIRST, then every STEP up to TOTAL."""
    return [FIRST, *range(STEP, TOTAL + 1, STEP)]


def run_chunk(reader: WorkerApp, sides: tuple[Side, Side], tasks: int) -> None:
    """Feed both queues ``tasks`` tasks (interleaved), wait until all have run, and delete
    their results so Redis stays small over the whole run."""
    ids: tuple[list[str], list[str]] = ([], [])
    for _ in range(tasks):
        for side, side_ids in zip(sides, ids, strict=True):
            side_ids.append(side.publish())
    client = reader.backend.client
    for side_ids in ids:
        completion_times(reader, side_ids)
        keys = [reader.backend.get_key_for_task(task_id) for task_id in side_ids]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


def mib(kib: int) -> float:
    """KiB to MiB, rounded for the report."""
    return round(kib / KIB_PER_MIB, 2)


def growth_figure(
    measure: str, ours: list[tuple[int, int]], theirs: list[tuple[int, int]], x_label: str
) -> Figure:
    """Growth from the first sample to the last, ours against plain Celery's, with the series."""
    ours_growth = mib(ours[-1][1] - ours[0][1])
    plain_growth = mib(theirs[-1][1] - theirs[0][1])
    return record(
        Figure(
            benchmark="memory",
            measure=measure,
            ours=ours_growth,
            unit="MiB",
            anchor=plain_growth,
            anchor_name="plain Celery",
            ratio=round(ours_growth / plain_growth, 3) if plain_growth > 0 else None,
            target=f"<= {TARGET_MIB:g} MiB",
            met=ours_growth <= TARGET_MIB,
            detail=(
                f"RSS after {ours[0][0]:,} -> {ours[-1][0]:,} tasks: ours {mib(ours[0][1])} -> "
                f"{mib(ours[-1][1])} MiB, plain Celery {mib(theirs[0][1])} -> "
                f"{mib(theirs[-1][1])} MiB"
            ),
            series={
                "ours": [[float(n), mib(kib)] for n, kib in ours],
                "plain Celery": [[float(n), mib(kib)] for n, kib in theirs],
            },
            x_label=x_label,
        )
    )


def test_the_worker_main_process_stays_within_5_mib_over_100000_tasks(
    producer_app: WorkerApp,
    plain_app: Celery,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    producer_app.backend.client.flushdb()
    ours = ours_side(producer_app, start_worker, OURS_QUEUE, env=OURS_DEFAULTS)
    theirs = plain_side(plain_app, start_worker, PLAIN_QUEUE, env=PLAIN_LIMITS)
    workers = start_together((ours, theirs))
    pids = [worker.process.pid for worker in workers if worker.process is not None]
    assert len(pids) == 2
    samples: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
    done = 0
    for point in checkpoints():
        run_chunk(producer_app, (ours, theirs), point - done)
        done = point
        for pid, side_samples in zip(pids, samples, strict=True):
            side_samples.append((done, vm_rss_kib(pid)))
    figure = growth_figure(
        "worker main process RSS growth, c=2, time limits 3600/3000 s", *samples, "tasks run"
    )
    assert figure.met


def test_a_producer_stays_within_5_mib_over_100000_sends(redis_url: str) -> None:
    ours = run_producer(redis_url, TOTAL, FIRST, STEP, "ours")
    theirs = run_producer(redis_url, TOTAL, FIRST, STEP, "plain")
    figure = growth_figure("producer RSS growth (send_task)", ours, theirs, "tasks sent")
    assert figure.met
