"""Two workers draining at the same time, each its own queue: rates that share every disturbance.

On this 2-core VM the speed drifts by +-15 % from one round to the next, several times the
effects the benchmarks measure. Side by side, every disturbance (the hypervisor, the kernel,
Redis) hits both workers at the same moment, and the two get equal shares of the CPU (each
worker is its own session, and the kernel's autogroup scheduling shares the CPU between
sessions), so a worker that spends more CPU per task drains fewer tasks. Rates are taken from
the results' own completion times, over the window in which both were draining.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from personal_assistant.workers.celery_app import WorkerApp
from tests.support.redis_server import free_port
from tests.support.worker import WorkerProcess

# Child recycling (max-tasks-per-child) stalls a drain for 0.1-1.7 s at points that land at
# random, the same on both sides; benchmarks turn it off.
NO_RECYCLING = {"WORKER_MAX_TASKS_PER_CHILD": "1000000"}


def completion_times(app: WorkerApp, ids: list[str]) -> list[float]:
    """When each task's result was stored (``date_done``), sorted; waits until all are in."""
    client = app.backend.client
    keys = [app.backend.get_key_for_task(task_id) for task_id in ids]
    deadline = time.monotonic() + 300
    while True:
        # A task's key appears at STARTED (TASK_TRACK_STARTED), without date_done: not done yet.
        results = [json.loads(raw) for raw in client.mget(keys) if raw is not None]
        done = [r["date_done"] for r in results if r.get("date_done") is not None]
        if len(done) == len(keys):
            break
        assert time.monotonic() < deadline, "the workers did not drain their queues in time"
        time.sleep(0.5)  # polls twice a second: a waiter per task would steal CPU
    return sorted(datetime.fromisoformat(moment).timestamp() for moment in done)


def rates_in_common_window(first: list[float], second: list[float]) -> tuple[float, float]:
    """Tasks per second of each side between the moment both were draining and the moment
    the first of them ran out of work."""
    start, end = max(first[0], second[0]), min(first[-1], second[-1])
    assert end - start > 1.0, "the two drains barely overlapped"

    def rate(times: list[float]) -> float:
        done = bisect.bisect_right(times, end) - bisect.bisect_left(times, start)
        return done / (end - start)

    return rate(first), rate(second)


def side_by_side(
    app: WorkerApp,
    start: Callable[..., WorkerProcess],
    first: tuple[str, Mapping[str, str]],
    second: tuple[str, Mapping[str, str]],
    tasks: int,
) -> tuple[float, float]:
    """One round: fill both queues with ``tasks`` no-op tasks each, start one worker (c=2) per
    (queue, environment) at once, and return their rates over the common window."""
    app.backend.client.flushdb()
    queues = (first[0], second[0])
    ids: dict[str, list[str]] = {queue: [] for queue in queues}
    for _ in range(tasks):  # interleaved, so both queues are filled alike
        for queue in queues:
            ids[queue].append(app.send_task("tests.noop", queue=queue).id)
    workers: list[WorkerProcess] = []

    def launch(queue: str, env: Mapping[str, str]) -> None:
        full = {"METRICS_PORT": str(free_port()), **NO_RECYCLING, **env}
        workers.append(start([queue], concurrency=2, env=full, extra_args=["--without-heartbeat"]))

    launchers = [threading.Thread(target=launch, args=side) for side in (first, second)]
    for launcher in launchers:
        launcher.start()
    for launcher in launchers:
        launcher.join()
    assert len(workers) == 2, "a worker did not start (its log is printed below)"
    try:
        first_times = completion_times(app, ids[queues[0]])
        second_times = completion_times(app, ids[queues[1]])
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.stop()
    return rates_in_common_window(first_times, second_times)
