"""Each domain's tasks land on their own queue, and higher priorities overtake on Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import redis_list_names
from personal_assistant.workers.celery_app import WorkerApp
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

PROBES = {queue: f"{c.TASKS_PACKAGE}.{queue}.probe" for queue in c.QUEUES}


def queue_depth(client: redis.Redis, queue: str) -> int:
    return sum(int(client.llen(name)) for name in redis_list_names(queue))


def test_each_domain_task_is_published_to_its_own_queue(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    for queue, task_name in PROBES.items():
        producer_app.send_task(task_name)
        depths = {q: queue_depth(redis_client, q) for q in c.QUEUES}
        assert depths[queue] == 1, depths
        assert sum(depths.values()) == 1, depths
        redis_client.delete(*redis_list_names(queue))


def test_only_the_queues_own_worker_runs_its_tasks(
    producer_app: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    workers = {queue: start_worker([queue]) for queue in c.QUEUES}
    results = {queue: producer_app.send_task(name) for queue, name in PROBES.items()}
    for queue, result in results.items():
        ran = result.get(timeout=30)
        assert ran["queue"] == queue
        assert ran["hostname"] == workers[queue].hostname
        assert ran["priority"] == min(c.DOMAIN_PRIORITIES[queue], c.PRIORITY_MAX)


def test_a_higher_priority_task_overtakes_lower_ones_queued_before_it(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    queue = c.MAINTENANCE_QUEUE
    for i in range(5):
        producer_app.send_task("tests.record", args=[f"low-{i}"], queue=queue, priority=1)
    producer_app.send_task("tests.record", args=["default"], queue=queue)
    producer_app.send_task("tests.record", args=["high"], queue=queue, priority=9)
    # The seed's "10 = high" is clamped to the top level, not sent to the bottom.
    producer_app.send_task("tests.record", args=["seed-ten"], queue=queue, priority=10)
    assert queue_depth(redis_client, queue) == 8

    start_worker([queue], concurrency=1)
    wait_for(lambda: redis_client.llen("test:order") == 8, timeout=30)
    tags = [raw.decode() for raw in cast("list[bytes]", redis_client.lrange("test:order", 0, -1))]
    assert set(tags[:2]) == {"high", "seed-ten"}
    assert tags[2] == "default"
    assert tags[3:] == [f"low-{i}" for i in range(5)]
