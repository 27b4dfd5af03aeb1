"""A worker SIGKILLed mid-task loses no task: it runs again after the visibility timeout."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

# A visibility timeout of 5 s, consistent with the limits it must exceed (config refuses less).
SHORT_VISIBILITY = {
    "TASK_TIME_LIMIT": "4",
    "TASK_SOFT_TIME_LIMIT": "3",
    "MAX_COUNTDOWN": "2",
    "RETRY_BACKOFF_MAX": "2",
    "VISIBILITY_TIMEOUT": "5",
    "UNACKED_RESTORE_INTERVAL": "1",
    "UNACKED_RESTORE_THROTTLE": "1",
}


def test_a_task_whose_worker_is_sigkilled_runs_again_on_another_worker(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    doomed = start_worker([c.FILE_QUEUE], env=SHORT_VISIBILITY)
    result = producer_app.send_task("tests.slow", args=["job", 2.0], queue=c.FILE_QUEUE)
    wait_for(lambda: redis_client.llen("started:job") == 1, timeout=30)
    doomed.kill_hard()
    assert redis_client.llen("done:job") == 0

    survivor = start_worker([c.FILE_QUEUE], env=SHORT_VISIBILITY)
    ran = result.get(timeout=60)
    assert ran["hostname"] == survivor.hostname
    assert redis_client.llen("started:job") == 2
    assert redis_client.llen("done:job") == 1
