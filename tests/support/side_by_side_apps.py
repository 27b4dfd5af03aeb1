"""Two different worker apps draining side by side, each its own queue: this package's worker
against plain Celery (tests/support/plain_noop_app.py) under the same disturbances.

The same method as side_by_side.py (read its docstring: why side by side on this 2-core VM),
generalised to two sides that differ in app and producer: each side says how it publishes one
no-op task and how its worker starts. A round fills both queues (each in one block, timed: the
enqueue rates), starts both workers at once, and takes the drain rates from the results' own
completion times over the window in which both were draining.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from celery import Celery

from personal_assistant.workers.celery_app import WorkerApp
from tests.support import plain_noop_app as plain
from tests.support.redis_server import free_port
from tests.support.side_by_side import NO_RECYCLING, completion_times, rates_in_common_window
from tests.support.worker import WorkerProcess

# Celery's event heartbeat (worker-heartbeat every 2 s) is off on both sides, as in
# side_by_side.py: nothing here reads events, and ours has its own liveness beat.
WORKER_ARGS = ["--without-heartbeat"]
PLAIN_APP_MODULE = "tests.support.plain_noop_app"
StartWorker = Callable[..., WorkerProcess]


@dataclass(frozen=True)
class Side:
    """One side of a round: ``publish`` sends one no-op task to the side's queue and returns its
    id; ``start`` starts the side's worker on that queue and returns once it is ready."""

    name: str
    publish: Callable[[], str]
    start: Callable[[], WorkerProcess]


@dataclass(frozen=True)
class Round:
    """What one round measured, each pair in the order the sides were given."""

    drain: tuple[float, float]  # tasks per second over the common window
    enqueue: tuple[float, float]  # tasks per second the producer published
    window: float  # seconds both sides were draining


def ours_side(
    app: WorkerApp,
    start_worker: StartWorker,
    queue: str,
    *,
    concurrency: int = 2,
    env: Mapping[str, str] | None = None,
) -> Side:
    """This package's worker (its defaults, child recycling off, plus ``env``) on ``queue``,
    fed by ``app.send_task``."""

    def publish() -> str:
        return str(app.send_task("tests.noop", queue=queue).id)

    def start() -> WorkerProcess:
        full = {"METRICS_PORT": str(free_port()), **NO_RECYCLING, **(env or {})}
        return start_worker([queue], concurrency=concurrency, env=full, extra_args=WORKER_ARGS)

    return Side("ours", publish, start)


def plain_side(
    app: Celery,
    start_worker: StartWorker,
    queue: str,
    *,
    concurrency: int = 2,
    env: Mapping[str, str] | None = None,
) -> Side:
    """Plain Celery's worker (plain_noop_app.py) on ``queue``, fed by ``noop.apply_async``."""
    noop = app.tasks[plain.NOOP]

    def publish() -> str:
        return str(noop.apply_async(queue=queue).id)

    def start() -> WorkerProcess:
        full = {plain.QUEUE_ENV: queue, **(env or {})}
        return start_worker(
            [queue],
            concurrency=concurrency,
            env=full,
            extra_args=WORKER_ARGS,
            app=PLAIN_APP_MODULE,
        )

    return Side("plain Celery", publish, start)


def fill(side: Side, tasks: int) -> tuple[list[str], float]:
    """Publish ``tasks`` no-op tasks through ``side``; their ids and the rate (tasks/s)."""
    started = time.perf_counter()
    ids = [side.publish() for _ in range(tasks)]
    return ids, tasks / (time.perf_counter() - started)


def start_together(sides: tuple[Side, Side]) -> list[WorkerProcess]:
    """Start both sides' workers at once (a thread each) and return them in the sides' order;
    fails, stopping the one that did start, if either did not."""
    started: dict[int, WorkerProcess] = {}
    errors: list[str] = []

    def launch(index: int, side: Side) -> None:
        try:
            started[index] = side.start()
        except BaseException as error:  # reported below, in the test's thread
            errors.append(f"{side.name}: {error}")

    launchers = [threading.Thread(target=launch, args=pair) for pair in enumerate(sides)]
    for launcher in launchers:
        launcher.start()
    for launcher in launchers:
        launcher.join()
    if errors:
        for worker in started.values():
            worker.stop()
        raise AssertionError(f"a worker did not start ({errors[0]})")
    return [started[index] for index in range(len(sides))]


def side_by_side_apps(reader: WorkerApp, first: Side, second: Side, tasks: int) -> Round:
    """One round: fill ``first``'s queue, then ``second``'s, with ``tasks`` no-op tasks each,
    start both workers at once, and measure. ``reader`` reads the results (both sides store
    them in the same Redis database, under Celery's own keys)."""
    reader.backend.client.flushdb()
    first_ids, first_enqueue = fill(first, tasks)
    second_ids, second_enqueue = fill(second, tasks)
    workers = start_together((first, second))
    try:
        first_times = completion_times(reader, first_ids)
        second_times = completion_times(reader, second_ids)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.stop()
    window = min(first_times[-1], second_times[-1]) - max(first_times[0], second_times[0])
    return Round(
        drain=rates_in_common_window(first_times, second_times),
        enqueue=(first_enqueue, second_enqueue),
        window=window,
    )


def alternating_rounds(
    reader: WorkerApp, ours: Side, theirs: Side, tasks: int, rounds: int
) -> list[Round]:
    """``rounds`` rounds, each reported as (ours, theirs); which side is filled and launched
    first alternates, so neither position favours one side over the rounds."""
    measured: list[Round] = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            measured.append(side_by_side_apps(reader, ours, theirs, tasks))
            continue
        swapped = side_by_side_apps(reader, theirs, ours, tasks)
        measured.append(Round(_swap(swapped.drain), _swap(swapped.enqueue), swapped.window))
    return measured


def _swap(pair: tuple[float, float]) -> tuple[float, float]:
    return pair[1], pair[0]
