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
from personal_assistant.workers.celery_app import WorkerApp, create_app
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.workflows import runtime
from personal_assistant.workers.workflows.definition import WorkflowValidationError
from personal_assistant.workers.workflows.trigger_rules import Status
from tests.support.workflow_inputs import CLEANUP_OLD_LOGS, celery_chunks, cleanup_everything

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


# --- the allow-list and the size caps (issue 11) ---------------------------------------------


def published(client: redis.Redis) -> list[dict[str, Any]]:
    """Every task message waiting in any queue, highest priority first."""
    return [
        json.loads(raw)
        for queue in c.QUEUES
        for name in redis_list_names(queue)
        for raw in client.lrange(name, 0, -1)
    ]


def nothing_stored_or_published(client: redis.Redis) -> bool:
    """No workflow key and no message anywhere (kombu's own bindings aside)."""
    return [k for k in client.scan_iter() if not k.startswith(b"_kombu.")] == []


@pytest.mark.parametrize(
    "definition",
    [cleanup_everything(), celery_chunks()],
    ids=["cleanup-old-logs-of-everything", "celery-chunks"],
)
def test_a_forbidden_task_is_refused_at_submit_and_nothing_is_stored_or_published(
    producer_app: WorkerApp, redis_client: redis.Redis, definition: dict[str, Any]
) -> None:
    with pytest.raises(WorkflowValidationError) as refused:
        runtime.submit_workflow(definition, app=producer_app)
    assert "may not run in a workflow" in str(refused.value)
    assert nothing_stored_or_published(redis_client)


def test_a_definition_over_the_size_limit_is_refused_and_nothing_is_stored_or_published(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    chunk = "x" * (c.WORKFLOW_MAX_ARGS_BYTES - 100)  # each task's arguments fit
    tasks = {f"t{i}": {"task": "tests.noop", "args": [chunk], "options": Q} for i in range(40)}
    with pytest.raises(WorkflowValidationError) as refused:
        runtime.submit_workflow({"tasks": tasks}, app=producer_app)
    assert str(refused.value) == (
        "invalid workflow: the definition is larger than the limit of 1,048,576 bytes (as JSON)"
    )
    assert nothing_stored_or_published(redis_client)


def test_arguments_over_the_size_limit_are_refused_and_nothing_is_stored_or_published(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    big = {"task": "tests.noop", "kwargs": {"blob": "x" * c.WORKFLOW_MAX_ARGS_BYTES}}
    with pytest.raises(WorkflowValidationError) as refused:
        runtime.submit_workflow({"tasks": {"big": {**big, "options": Q}}}, app=producer_app)
    assert f"the limit is {c.WORKFLOW_MAX_ARGS_BYTES:,} bytes" in str(refused.value)
    assert nothing_stored_or_published(redis_client)


def store_forbidden_task(client: redis.Redis, workflow_id: str, task_id: str, name: str) -> None:
    """Rewrite the stored definition as if it had been stored before the allow-list."""
    key = f"pa:wf:{workflow_id}:def"
    stored = json.loads(client.get(key))  # type: ignore[arg-type]
    for task in stored["tasks"]:
        if task["id"] == task_id:
            task["task"] = name
    client.set(key, json.dumps(stored))


@pytest.mark.parametrize("name", [CLEANUP_OLD_LOGS, "celery.chunks"])
@pytest.mark.parametrize("publish", ["in-the-commit", "send-task"])
def test_a_stored_definition_naming_a_forbidden_task_is_refused_at_dispatch(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    publish: str,
) -> None:
    if publish == "send-task":  # as on a broker the commit cannot publish to
        monkeypatch.setattr(producer_app, "workflow_outbox", False)
    definition = {
        "tasks": {
            "a": {"task": "tests.noop", "options": Q},
            "b": {"task": "tests.noop", "depends_on": ["a"], "options": Q},
            "after_b": {"task": "tests.noop", "depends_on": ["b"], "options": Q},
            "alarm": {
                "task": "tests.noop",
                "depends_on": ["b"],
                "trigger_rule": "one_failed",
                "options": Q,
            },
        }
    }
    workflow_id = runtime.submit_workflow(definition, app=producer_app)
    store_forbidden_task(redis_client, workflow_id, "b", name)
    redis_client.delete(*redis_list_names(c.FILE_QUEUE))

    runtime.record_task_event(producer_app, workflow_id, "a", Status.COMPLETED)

    tasks = runtime.workflow_status(workflow_id, app=producer_app)["tasks"]
    assert tasks["b"]["status"] == Status.FAILED
    assert tasks["b"]["error"].startswith(f"not dispatched: task '{name}' may not run in a")
    assert tasks["after_b"]["status"] == Status.UPSTREAM_FAILED
    assert tasks["alarm"]["status"] == Status.QUEUED  # the workflow goes on by its rules
    messages = published(redis_client)
    assert [m["headers"]["pa_workflow_task"] for m in messages] == ["alarm"]
    assert [m["headers"]["task"] for m in messages] == ["tests.noop"]

    runtime.record_task_event(producer_app, workflow_id, "alarm", Status.COMPLETED)
    status = runtime.workflow_status(workflow_id, app=producer_app)
    assert status["state"] == "failed"  # its leaf after_b never ran
    assert not redis_client.sismember("pa:wf:open", workflow_id)


def test_a_task_the_workers_settings_no_longer_allow_is_failed_at_dispatch(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    workflow_id = runtime.submit_workflow(fan_in(1), app=producer_app)
    redis_client.delete(*redis_list_names(c.FILE_QUEUE))
    url = str(producer_app.conf.broker_url)
    stricter = create_app(
        load_settings(
            celery_broker_url=url, celery_result_backend=url, workflow_allowed_tasks=["tests.step"]
        )
    )
    try:
        runtime.record_task_event(stricter, workflow_id, "u0", Status.COMPLETED)
    finally:
        stricter.close()
    status = runtime.workflow_status(workflow_id, app=producer_app)
    assert status["state"] == "failed"
    assert (
        "'tests.noop' may not run in a workflow: not on the allow-list"
        in (status["tasks"]["sink"]["error"])
    )
    assert published(redis_client) == []
