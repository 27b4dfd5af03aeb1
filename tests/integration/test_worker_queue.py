"""A plain ``celery worker`` (no ``-Q``) consumes the queues of WORKER_QUEUE, as the containers
run it; ``-Q`` still wins over the setting."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.worker_app import WorkerApp
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration


def test_a_worker_without_queue_options_consumes_only_the_queue_of_worker_queue(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker([], env={"WORKER_QUEUE": c.FILE_QUEUE})

    ran = producer_app.send_task("tests.noop", queue=c.FILE_QUEUE)
    left = producer_app.send_task("tests.noop", queue=c.EMAIL_QUEUE)

    assert ran.get(timeout=30) == 1
    time.sleep(1.0)  # long enough for a worker consuming email_tasks to have taken it
    assert queue_depths(redis_client, [c.EMAIL_QUEUE])[c.EMAIL_QUEUE] == 1
    assert left.state == "PENDING"
    assert f"consuming {c.FILE_QUEUE} (WORKER_QUEUE)" in worker.log()


def test_queues_named_on_the_command_line_win_over_worker_queue(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker([c.EMAIL_QUEUE], env={"WORKER_QUEUE": c.FILE_QUEUE})

    ran = producer_app.send_task("tests.noop", queue=c.EMAIL_QUEUE)
    producer_app.send_task("tests.noop", queue=c.FILE_QUEUE)

    assert ran.get(timeout=30) == 1
    time.sleep(1.0)
    assert queue_depths(redis_client, [c.FILE_QUEUE])[c.FILE_QUEUE] == 1
    assert "(WORKER_QUEUE)" not in worker.log()
