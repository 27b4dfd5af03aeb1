"""The runtime keeps the workflow index as the workflows' own keys live: indexed by the submit
that stores them, given their keys' expiry by the end that sets it, trimmed once expired."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.workflows import index, runtime
from personal_assistant.workers.workflows.definition import WorkflowValidationError
from personal_assistant.workers.workflows.trigger_rules import Status

pytestmark = pytest.mark.integration

SINGLE: dict[str, Any] = {
    "tasks": {"a": {"task": "tests.step", "options": {"queue": c.FILE_QUEUE}}}
}


def test_a_submitted_workflow_is_indexed_at_its_creation_time(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    before = time.time()
    workflow_id = runtime.submit_workflow(SINGLE, app=producer_app)

    created = runtime.workflow_status(workflow_id, app=producer_app)["created_at"]
    assert redis_client.zscore(keys.WORKFLOWS_INDEX_KEY, workflow_id) == created
    assert before <= created <= time.time()
    assert redis_client.zscore(keys.WORKFLOWS_EXPIRING_KEY, workflow_id) is None  # running


def test_a_refused_definition_is_not_indexed(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    with pytest.raises(WorkflowValidationError):
        runtime.submit_workflow({"tasks": {"a": {"task": "tests.stepp"}}}, app=producer_app)

    assert redis_client.zcard(keys.WORKFLOWS_INDEX_KEY) == 0


@pytest.mark.parametrize("ending", ["completed", "cancelled"])
def test_an_ended_workflow_expires_from_the_index_with_its_keys(
    producer_app: WorkerApp, redis_client: redis.Redis, ending: str
) -> None:
    workflow_id = runtime.submit_workflow(SINGLE, app=producer_app)
    if ending == "completed":
        runtime.record_task_event(producer_app, workflow_id, "a", Status.COMPLETED)
    else:
        runtime.cancel_workflow(workflow_id, app=producer_app)

    expires_at = redis_client.zscore(keys.WORKFLOWS_EXPIRING_KEY, workflow_id)
    ttl = redis_client.ttl(keys.workflow_meta_key(workflow_id))
    assert expires_at is not None
    assert 0 < ttl <= runtime.FINISHED_TTL_S
    assert abs(expires_at - (time.time() + ttl)) < 5  # the same moment as its keys
    assert [r.id for r in index.list_workflows(redis_client, state=ending)] == [workflow_id]

    # A week later the next submit's trim takes it out of both sets.
    assert index.trim(redis_client, expires_at + 1) == 1
    assert redis_client.zscore(keys.WORKFLOWS_INDEX_KEY, workflow_id) is None
    assert redis_client.zscore(keys.WORKFLOWS_EXPIRING_KEY, workflow_id) is None
