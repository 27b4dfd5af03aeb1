"""Transient errors are retried with growing delays; permanent ones are dead-lettered once."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.dead_letters.queue import DeadLetterQueue
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess, worker_env

pytestmark = pytest.mark.integration

FAST_RETRIES = {"RETRY_BACKOFF_BASE": "0.4", "TASK_MAX_RETRIES": "3"}


def attempt_times(client: redis.Redis, key: str) -> list[float]:
    return [float(raw) for raw in client.lrange(f"attempts:{key}", 0, -1)]


def test_a_transient_error_is_retried_with_growing_delays_until_it_succeeds(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], env=FAST_RETRIES)
    result = producer_app.send_task("tests.flaky", args=["blip", 3], queue=c.MAINTENANCE_QUEUE)
    assert result.get(timeout=60) == 4
    times = attempt_times(redis_client, "blip")
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 3
    # Equal jitter: the n-th delay lies in [d/2, d] with d = 0.4 * 2**n, so each delay is at
    # least the previous ceiling's half and the last is well above the first.
    for n, gap in enumerate(gaps):
        assert gap >= 0.4 * 2**n / 2 - 0.05, gaps
    assert gaps[2] > gaps[0], gaps
    assert len(DeadLetterQueue(redis_client)) == 0


def test_a_transient_error_out_of_retries_is_dead_lettered_once(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], env={**FAST_RETRIES, "TASK_MAX_RETRIES": "2"})
    result = producer_app.send_task("tests.flaky", args=["outage", 99], queue=c.MAINTENANCE_QUEUE)
    with pytest.raises(Exception, match="attempt 3 of outage failed"):
        result.get(timeout=60)
    assert len(attempt_times(redis_client, "outage")) == 3
    letters = wait_for(lambda: DeadLetterQueue(redis_client).list(), timeout=10)
    assert len(letters) == 1
    assert letters[0].exception_type == "TransientError"
    assert letters[0].retries == 2


def test_a_permanent_error_is_dead_lettered_once_and_replayable_from_the_cli(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    redis_url: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], env=FAST_RETRIES)
    result = producer_app.send_task(
        "tests.broken_until_fixed", args=["parser"], queue=c.MAINTENANCE_QUEUE, priority=7
    )
    with pytest.raises(Exception, match="parser is broken"):
        result.get(timeout=30)
    dlq = DeadLetterQueue(redis_client)
    letters = wait_for(dlq.list, timeout=10)
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.task_name, letter.args, letter.exception_type) == (
        "tests.broken_until_fixed",
        ["parser"],
        "PermanentError",
    )
    assert "parser is broken" in letter.traceback
    assert (letter.queue, letter.priority) == (c.MAINTENANCE_QUEUE, 7)
    assert len(attempt_times(redis_client, "parser")) == 1  # no retry of a permanent error

    redis_client.set("fixed:parser", 1)
    env = worker_env(redis_url)
    cli = [sys.executable, "-m", "celery", "-A", "tests.support.celery_test_app", "dlq"]
    listed = subprocess.run(
        [*cli, "list"], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert letter.id in listed.stdout
    replay = subprocess.run(
        [*cli, "replay", letter.id],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    wait_for(lambda: len(attempt_times(redis_client, "parser")) == 2, timeout=30)
    assert len(dlq) == 0
    again = subprocess.run(
        [*cli, "replay", letter.id],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert again.returncode != 0
    assert "no dead letter" in again.stderr.lower()
