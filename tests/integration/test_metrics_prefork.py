"""Scraped task counters equal the ground truth under prefork, child churn and a SIGKILLed child."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

Q = c.FILE_QUEUE


def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics, summed over labels: {sample name: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def modes(n: int) -> list[str]:
    """n tasks: one killed, 5 % failing, 5 % retried once, the rest fine."""
    out = []
    for i in range(n):
        if i == n // 2:
            out.append("kill")
        elif i % 20 == 7:
            out.append("fail")
        elif i % 20 == 13:
            out.append("retry")
        else:
            out.append("ok")
    return out


def test_scraped_counters_equal_the_ground_truth_under_churn_and_a_killed_child(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    start_worker(
        [Q],
        concurrency=2,
        extra_args=["--max-tasks-per-child", "5"],
        env={"METRICS_PORT": str(port), "RETRY_BACKOFF_BASE": "0.05"},
    )
    plan = modes(1000)
    results = [
        producer_app.send_task("tests.metered", args=[i, mode], queue=Q)
        for i, mode in enumerate(plan)
    ]
    for result in results:
        result.get(timeout=120, propagate=False)

    def gt(key: str) -> int:
        return int(redis_client.llen(key))

    assert gt("gt:killed") == 1
    expected = {
        "celery_task_received_total": len(plan) + gt("gt:retried") + gt("gt:killed"),
        "celery_task_started_total": gt("gt:started"),
        "celery_task_succeeded_total": gt("gt:succeeded"),
        "celery_task_failed_total": gt("gt:failed"),
        "celery_task_retried_total": gt("gt:retried"),
        "celery_task_rejected_total": gt("gt:killed"),
        "celery_task_runtime_count": gt("gt:started"),
    }
    assert expected["celery_task_started_total"] == len(plan) + 50 + 1
    # The last ends are recorded as the results come back: wait for them, then compare exactly.
    wait_for(
        lambda: (
            scrape(port)["celery_task_succeeded_total"] == expected["celery_task_succeeded_total"]
        ),
        timeout=30,
    )
    totals = scrape(port)
    assert {name: totals.get(name) for name in expected} == expected
    assert totals["celery_worker_tasks_active"] == 0
    assert totals["celery_task_queue_wait_time_count"] == gt("gt:started")
    # Cluster-wide series are beat's (metrics/cluster_series.py): a worker exports none.
    assert "celery_queue_length" not in totals
    assert "celery_worker_up" not in totals
