"""A workflow task without ``options`` is published at its queue's priority, first task or not.

The messages are read where the broker keeps them (the queue's Redis lists), so the priority
checked is the one a worker would see.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import redis_bucket_for, redis_list_names
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.keys import priority_list_key
from personal_assistant.workers.workflows import runtime
from personal_assistant.workers.workflows.trigger_rules import Status

pytestmark = pytest.mark.integration

PROBE = f"{c.TASKS_PACKAGE}.{{queue}}.probe"
DOMAIN_QUEUES = [c.AI_QUEUE, c.SYNC_QUEUE, c.EMAIL_QUEUE, c.FILE_QUEUE]


def queued_messages(client: redis.Redis, queue: str) -> list[tuple[str, dict[str, Any]]]:
    """Every message waiting on ``queue``: (the Redis list it is on, the message)."""
    found = []
    for name in redis_list_names(queue):
        for raw in cast(list[bytes], client.lrange(name, 0, -1)):
            found.append((name, json.loads(raw)))
    return found


def expected_priority(queue: str) -> int:
    return min(c.DOMAIN_PRIORITIES[queue], c.PRIORITY_MAX)


@pytest.mark.parametrize("queue", DOMAIN_QUEUES)
def test_the_first_task_of_a_workflow_without_options_gets_its_queues_priority(
    producer_app: WorkerApp, redis_client: redis.Redis, queue: str
) -> None:
    task = PROBE.format(queue=queue)
    runtime.submit_workflow({"tasks": {"first": {"task": task}}}, app=producer_app)

    [(list_name, message)] = queued_messages(redis_client, queue)
    priority = expected_priority(queue)
    assert message["properties"]["priority"] == priority
    assert list_name == priority_list_key(queue, redis_bucket_for(priority))


def test_first_and_later_tasks_of_a_workflow_get_the_same_default_priority(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    task = PROBE.format(queue=c.AI_QUEUE)
    workflow_id = runtime.submit_workflow(
        {"tasks": {"first": {"task": task}, "second": {"task": task, "depends_on": ["first"]}}},
        app=producer_app,
    )
    # The first task's end, recorded as a worker records it: the commit publishes the second.
    runtime.record_task_event(producer_app, workflow_id, "first", Status.COMPLETED)

    messages = queued_messages(redis_client, c.AI_QUEUE)
    by_task = {m["headers"][runtime.HEADER_TASK]: m for _, m in messages}
    assert set(by_task) == {"first", "second"}
    assert {t: m["properties"]["priority"] for t, m in by_task.items()} == {
        "first": expected_priority(c.AI_QUEUE),
        "second": expected_priority(c.AI_QUEUE),
    }


def test_a_priority_in_the_tasks_options_wins_over_its_queues_default(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    task = PROBE.format(queue=c.AI_QUEUE)
    runtime.submit_workflow(
        {"tasks": {"first": {"task": task, "options": {"priority": 2}}}}, app=producer_app
    )

    [(_, message)] = queued_messages(redis_client, c.AI_QUEUE)
    assert message["properties"]["priority"] == 2
