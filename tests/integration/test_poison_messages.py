"""Messages no worker can run are dead-lettered with their reason and bytes, counted by reason,
and the worker serves the next message."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.custody import wake_key
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.dead_letters.queue import DeadLetterQueue
from tests.support.metrics import by_label, samples
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

LIMIT = 4096


def push_raw(client: redis.Redis, item: bytes | str) -> None:
    """Push bytes onto the queue's list as a foreign producer would (with a wake token)."""
    client.lpush(c.FILE_QUEUE, item)
    client.lpush(wake_key(c.FILE_QUEUE), "")


def test_every_kind_of_poison_message_is_dead_lettered_and_the_worker_goes_on(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    worker = start_worker(
        [c.FILE_QUEUE],
        env={"METRICS_PORT": str(port), "BROKER_MAX_MESSAGE_BYTES": str(LIMIT)},
    )
    push_raw(redis_client, b"not json {\xff\xfe")
    push_raw(redis_client, json.dumps({"hello": "world"}))
    push_raw(redis_client, "x" * (LIMIT + 1))
    send = producer_app.send_task
    rejected = {
        "unknown_task": send("tests.no_such_task", args=[1], queue=c.FILE_QUEUE),
        "invalid_arguments": send("tests.count", args=[1, 2, 3, 4], queue=c.FILE_QUEUE),
        "bad_eta": send("tests.count", args=[1], queue=c.FILE_QUEUE, headers={"eta": "soon"}),
        "bad_header": send("tests.count", args=[1], queue=c.FILE_QUEUE, headers={"retries": "x"}),
        "too_large": send("tests.count", args=["y" * LIMIT], queue=c.FILE_QUEUE),
    }
    good = send("tests.count", args=[7], queue=c.FILE_QUEUE)

    assert good.get(timeout=30) == 7
    dead_letters = DeadLetterQueue(redis_client)
    wait_for(lambda: len(dead_letters) == 8, timeout=30)
    letters = dead_letters.list(20)
    reasons = Counter(letter.reason for letter in letters)
    assert reasons == {
        "not_json": 1,
        "malformed": 1,
        "too_large": 2,
        "unknown_task": 1,
        "invalid_arguments": 1,
        "bad_eta": 1,
        "bad_header": 1,
    }
    by_reason = {letter.reason: letter for letter in letters}
    assert "not json {\\xff\\xfe" in (by_reason["not_json"].raw or "")
    assert '"hello": "world"' in (by_reason["malformed"].raw or "")
    assert by_reason["bad_eta"].task_name == "tests.count"
    assert "'soon'" in by_reason["bad_eta"].exception
    assert "retries" in by_reason["bad_header"].exception
    assert by_reason["unknown_task"].task_name == "tests.no_such_task"
    assert not any(letter.replayable for letter in letters)
    # A caller waiting on a rejected task gets its failure, not a hang (even one too large to
    # decode: its id is read from the message's tail).
    for result in rejected.values():
        assert result.get(timeout=10, propagate=False) is not None
        assert result.state == "FAILURE"
    counted = by_label(samples(port, "celery_task_rejected_total"), "reason")
    assert counted == {reason: float(n) for reason, n in reasons.items()}
    assert worker.process is not None and worker.process.poll() is None
    wait_for(lambda: redis_client.hlen("unacked") == 0, timeout=10)  # acks follow results
