"""The runtime's atomic decisions, driven directly against a real Redis (no worker).

Messages pushed by a transition land in the queue's Redis lists, so counting them there counts
what was really published.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import redis_list_names
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.schedulers import workflow_runtime as runtime
from personal_assistant.workers.schedulers.trigger_rules import Status
from personal_assistant.workers.utils.task_monitoring import queue_depths

pytestmark = pytest.mark.integration

Q = {"queue": c.FILE_QUEUE}


def queued(client: redis.Redis) -> int:
    return queue_depths(client, [c.FILE_QUEUE])[c.FILE_QUEUE]


def fan_in(width: int) -> dict[str, Any]:
    uppers = {f"u{i}": {"task": "tests.noop", "options": Q} for i in range(width)}
    sink = {"task": "tests.noop", "depends_on": list(uppers), "options": Q}
    return {"tasks": {**uppers, "sink": sink}}


def test_two_upstreams_ending_at_the_same_moment_publish_their_dependent_exactly_once(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    for _ in range(50):
        redis_client.flushdb()
        workflow_id = runtime.submit_workflow(fan_in(2), app=producer_app)
        assert queued(redis_client) == 2  # the two roots
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def end(
            task_id: str,
            wid: str = workflow_id,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                runtime.record_task_event(producer_app, wid, task_id, Status.COMPLETED)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=end, args=(t,)) for t in ("u0", "u1")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert queued(redis_client) == 3  # the roots and one sink, never two
        status = runtime.workflow_status(workflow_id, app=producer_app)
        assert status["tasks"]["sink"]["status"] == Status.QUEUED


def test_a_final_status_reported_twice_is_counted_once(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    workflow_id = runtime.submit_workflow(fan_in(2), app=producer_app)
    for _ in range(3):  # a redelivered upstream reports its end again
        runtime.record_task_event(producer_app, workflow_id, "u0", Status.COMPLETED)
    status = runtime.workflow_status(workflow_id, app=producer_app)
    assert status["tasks"]["sink"]["status"] == Status.PENDING
    assert queued(redis_client) == 2
    runtime.record_task_event(producer_app, workflow_id, "u1", Status.COMPLETED)
    assert queued(redis_client) == 3


def test_the_last_final_task_ends_the_workflow_once_and_closes_it(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    workflow_id = runtime.submit_workflow(fan_in(1), app=producer_app)
    assert redis_client.sismember("pa:wf:open", workflow_id)
    runtime.record_task_event(producer_app, workflow_id, "u0", Status.COMPLETED)
    runtime.record_task_event(producer_app, workflow_id, "sink", Status.FAILED, error="boom")
    status = runtime.workflow_status(workflow_id, app=producer_app)
    assert status["state"] == "failed"
    assert status["tasks"]["sink"]["error"] == "boom"
    assert not redis_client.sismember("pa:wf:open", workflow_id)
    assert 0 < redis_client.ttl(f"pa:wf:{workflow_id}:meta") <= runtime.FINISHED_TTL_S


def test_a_published_dependent_carries_its_workflow_headers_and_priority(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    definition = {
        "tasks": {
            "a": {"task": "tests.noop", "options": Q},
            "b": {"task": "tests.noop", "depends_on": ["a"], "options": {**Q, "priority": 8}},
        }
    }
    workflow_id = runtime.submit_workflow(definition, app=producer_app)
    redis_client.delete(*redis_list_names(c.FILE_QUEUE))
    runtime.record_task_event(producer_app, workflow_id, "a", Status.COMPLETED)
    raw = [redis_client.lrange(name, 0, -1) for name in redis_list_names(c.FILE_QUEUE)]
    messages = [json.loads(m) for lists in raw for m in lists]
    assert len(messages) == 1
    message = messages[0]
    assert message["headers"]["pa_workflow"] == workflow_id
    assert message["headers"]["pa_workflow_task"] == "b"
    assert message["headers"]["id"] == runtime.celery_task_id(workflow_id, "b")
    assert message["properties"]["priority"] == 8
    assert isinstance(message["headers"]["pa_published_at"], float)  # queue wait is measurable
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == [] and body[1] == {}
    # Priority 8 is stored in the bucket served second (broker/priority.py).
    assert redis_client.llen(redis_list_names(c.FILE_QUEUE)[1]) == 1


def test_a_published_dependent_without_a_priority_gets_the_default_one(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    workflow_id = runtime.submit_workflow(fan_in(1), app=producer_app)
    redis_client.delete(*redis_list_names(c.FILE_QUEUE))
    runtime.record_task_event(producer_app, workflow_id, "u0", Status.COMPLETED)
    raw = [m for name in redis_list_names(c.FILE_QUEUE) for m in redis_client.lrange(name, 0, -1)]
    assert [json.loads(m)["properties"]["priority"] for m in raw] == [c.PRIORITY_DEFAULT]


def test_a_check_past_a_timeout_times_out_the_waiting_task_and_returns_it(
    producer_app: WorkerApp,
) -> None:
    definition = {
        "tasks": {
            "a": {"task": "tests.noop", "options": Q},
            "b": {"task": "tests.noop", "depends_on": ["a"], "timeout": 0.001, "options": Q},
        }
    }
    workflow_id = runtime.submit_workflow(definition, app=producer_app)
    assert runtime.check_timeouts(producer_app, workflow_id) == ["b"]
    status = runtime.workflow_status(workflow_id, app=producer_app)
    assert status["tasks"]["b"]["status"] == Status.TIMED_OUT
    assert status["tasks"]["a"]["status"] == Status.QUEUED


def test_an_unknown_workflow_is_reported_as_such(producer_app: WorkerApp) -> None:
    with pytest.raises(runtime.WorkflowNotFound):
        runtime.workflow_status("f" * 32, app=producer_app)
    with pytest.raises(runtime.WorkflowNotFound):
        runtime.cancel_workflow("f" * 32, app=producer_app)
