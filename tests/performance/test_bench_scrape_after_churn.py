"""A scrape after 10,000 child restarts takes under 50 ms.

The worker recycles its child after every task (--max-tasks-per-child 1) over 10,000 tasks. Our
metrics live in the main process only, so the scrape's cost does not grow with dead children
(prometheus_client's multiprocess mode keeps a file per dead child: reported 10 s at 5,400).
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from collections.abc import Callable

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.performance.conftest import Figure, record
from tests.support.redis_server import free_port
from tests.support.worker import WorkerProcess

RESTARTS = 10_000


def scrape_seconds(port: int) -> tuple[float, str]:
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        body = response.read().decode()
    return time.perf_counter() - start, body


# 10,000 child start-ups take 30 to 45 minutes on this 2-core VM, depending on its day.
@pytest.mark.timeout(3600)
def test_a_scrape_after_ten_thousand_child_restarts_takes_under_50_ms(
    producer_app: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    start_worker(
        [c.FILE_QUEUE],
        concurrency=2,
        extra_args=["--max-tasks-per-child", "1"],
        env={"METRICS_PORT": str(port)},
    )
    started = time.perf_counter()
    results = [producer_app.send_task("tests.noop", queue=c.FILE_QUEUE) for _ in range(RESTARTS)]
    for result in results:
        result.get(timeout=1200)
    churn = time.perf_counter() - started
    times = []
    body = ""
    for _ in range(20):
        elapsed, body = scrape_seconds(port)
        times.append(elapsed)
    succeeded = sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("celery_task_succeeded_total{")
    )
    median_ms = statistics.median(times) * 1000
    record(
        Figure(
            benchmark="scrape after churn",
            measure=f"scrape time after {RESTARTS:,} child restarts (median of {len(times)})",
            ours=median_ms,
            unit="ms",
            target="< 50 ms",
            met=median_ms < 50,
            detail=(
                f"{churn:.0f} s of churn; median {median_ms:.1f} ms, max "
                f"{max(times) * 1000:.1f} ms, {len(body)} bytes; tasks counted as succeeded: "
                f"{succeeded:.0f} of {RESTARTS}"
            ),
        )
    )
    assert succeeded == RESTARTS
    assert median_ms < 50
