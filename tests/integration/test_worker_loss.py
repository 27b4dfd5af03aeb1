"""A worker SIGKILLed mid-task loses no task: it runs again once the worker is silent (or after
the visibility timeout, the backstop); a warm shutdown gives back what the worker held."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import redis_list_names
from personal_assistant.workers.celery_app import WorkerApp
from tests.support.chaos import FAST_RECOVERY
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration


def test_a_task_whose_worker_is_sigkilled_runs_again_on_another_worker(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    doomed = start_worker([c.FILE_QUEUE], env=FAST_RECOVERY)
    result = producer_app.send_task("tests.slow", args=["job", 2.0], queue=c.FILE_QUEUE)
    wait_for(lambda: redis_client.llen("started:job") == 1, timeout=30)
    doomed.kill_hard()
    assert redis_client.llen("done:job") == 0

    survivor = start_worker([c.FILE_QUEUE], env=FAST_RECOVERY)
    ran = result.get(timeout=60)
    assert ran["hostname"] == survivor.hostname
    assert redis_client.llen("started:job") == 2
    assert redis_client.llen("done:job") == 1


def test_a_sigkilled_workers_tasks_run_again_once_it_is_silent_not_after_the_visibility_timeout(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # A visibility timeout of a minute: the redelivery below comes from the worker's silence.
    env = {**FAST_RECOVERY, "VISIBILITY_TIMEOUT": "60"}
    doomed = start_worker([c.FILE_QUEUE], env={**env, "METRICS_PORT": str(free_port())})
    survivor = start_worker([c.FILE_QUEUE], env={**env, "METRICS_PORT": str(free_port())})
    results = [
        producer_app.send_task("tests.slow", args=[f"job{i}", 1.5], queue=c.FILE_QUEUE)
        for i in range(2)
    ]
    wait_for(lambda: redis_client.llen("started:job0") + redis_client.llen("started:job1") == 2, 30)
    killed_at = time.monotonic()
    doomed.kill_hard()

    ran = [result.get(timeout=30) for result in results]

    assert time.monotonic() - killed_at < 20  # silence (3 s) + restore interval, not 60 s
    assert {execution["hostname"] for execution in ran} == {survivor.hostname}
    wait_for(lambda: redis_client.hlen("unacked") == 0, timeout=10)  # acked after the result


def test_a_warm_shutdown_puts_the_messages_a_worker_holds_back_on_their_queue_at_once(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker([c.FILE_QUEUE], env=FAST_RECOVERY)
    result = producer_app.send_task("tests.record", args=["later"], queue=c.FILE_QUEUE, countdown=2)
    wait_for(lambda: redis_client.hlen("unacked") == 1, timeout=30)  # held for its ETA

    worker.stop()

    assert redis_client.hlen("unacked") == 0
    queued = sum(int(redis_client.llen(name)) for name in redis_list_names(c.FILE_QUEUE))
    assert queued == 1
    start_worker([c.FILE_QUEUE], env=FAST_RECOVERY)
    assert result.get(timeout=30) == "later"
