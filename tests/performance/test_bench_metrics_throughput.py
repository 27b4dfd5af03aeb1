"""Throughput of no-op tasks with metrics on vs off (target: on >= 0.97 x off).

Same worker command, same Redis, alternating rounds; each round enqueues N no-op tasks with no
worker running, then starts a prefork worker (c=2) and times the drain from the first result to
the last, as the anchor (bare_celery.py) does. The anchor runs too, with and without Celery's
task events (what Flower and the popular exporter need), for the record.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.performance.conftest import report, run_anchor
from tests.support.redis_server import RedisServer, free_port
from tests.support.worker import WorkerProcess

N = 2000
ROUNDS = 5


def drain_rate(app: WorkerApp, start: Callable[..., WorkerProcess], metrics: bool) -> float:
    app.backend.client.flushdb()
    results = [app.send_task("tests.noop", queue=c.FILE_QUEUE) for _ in range(N)]
    worker = start(
        [c.FILE_QUEUE],
        concurrency=2,
        env={"METRICS_ENABLED": "true" if metrics else "false", "METRICS_PORT": str(free_port())},
        extra_args=["--without-heartbeat"],
    )
    try:
        results[0].get(timeout=60)
        first = time.perf_counter()
        for result in results:
            result.get(timeout=120)
        return (N - 1) / (time.perf_counter() - first)
    finally:
        worker.stop()


def test_metrics_cost_at_most_three_percent_of_throughput(
    anchors: Path,
    producer_app: WorkerApp,
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    on: list[float] = []
    off: list[float] = []
    for _ in range(ROUNDS):
        off.append(drain_rate(producer_app, start_worker, metrics=False))
        on.append(drain_rate(producer_app, start_worker, metrics=True))
    ratio = statistics.median(on) / statistics.median(off)
    url = redis_server.url.rsplit("/", 1)[0] + "/2"
    bare = run_anchor(anchors / "bare_celery.py", url, str(N)).splitlines()[-1]
    os.environ["EVENTS"] = "1"
    try:
        events = run_anchor(anchors / "bare_celery.py", url, str(N)).splitlines()[-1]
    finally:
        del os.environ["EVENTS"]
    report(
        f"throughput no-op, c=2: metrics off {statistics.median(off):.0f}/s "
        f"({[round(x) for x in off]}), on {statistics.median(on):.0f}/s "
        f"({[round(x) for x in on]}) = {ratio:.3f}x; anchor bare: {bare}; "
        f"anchor with events: {events}"
    )
    assert ratio >= 0.97
