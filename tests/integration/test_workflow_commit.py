"""The compare-and-set commit of a workflow transition, against a real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.broker.priority import redis_list_names
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.workflows import runtime
from personal_assistant.workers.workflows.commit import (
    Commit,
    ConflictError,
    commit,
)
from personal_assistant.workers.workflows.state_machine import DependencyScheduler
from personal_assistant.workers.workflows.trigger_rules import Status

pytestmark = pytest.mark.integration

Q = {"queue": c.FILE_QUEUE}


def queued(client: redis.Redis) -> int:
    return queue_depths(client, [c.FILE_QUEUE])[c.FILE_QUEUE]


def test_a_commit_writes_its_fields_bumps_their_versions_and_moves_the_counters(
    redis_client: redis.Redis,
) -> None:
    redis_client.hset("t:a", mapping={"status": '"pending"'})
    redis_client.hset("meta", mapping={"remaining": 3, "failed_leaves": 0})
    counters = commit(
        redis_client,
        Commit(
            meta_key="meta",
            checks=[("t:a", "0")],
            writes={"t:a": {"status": '"completed"'}},
            publishes=[("lpush", ("q", "message"))],
            final=1,
            failed_leaves=1,
        ),
    )
    assert counters == (2, 1)
    assert redis_client.hgetall("t:a") == {b"status": b'"completed"', b"v": b"1"}
    assert redis_client.lrange("q", 0, -1) == [b"message"]


def test_a_commit_that_makes_nothing_final_returns_no_counters(redis_client: redis.Redis) -> None:
    redis_client.hset("t:a", mapping={"status": '"pending"', "v": "4"})
    change = Commit(meta_key="meta", checks=[("t:a", "4")], writes={"t:a": {"error": "null"}})
    assert commit(redis_client, change) is None
    assert redis_client.hget("t:a", "v") == b"5"
    assert not redis_client.exists("meta")


def test_a_commit_whose_read_went_stale_conflicts_and_writes_nothing(
    redis_client: redis.Redis,
) -> None:
    redis_client.hset("t:a", mapping={"status": '"pending"', "v": "2"})
    redis_client.hset("t:b", mapping={"status": '"pending"'})
    stale = Commit(
        meta_key="meta",
        checks=[("t:b", "0"), ("t:a", "1")],  # t:a was read at version 1, it is now 2
        writes={"t:b": {"status": '"queued"'}},
        publishes=[("lpush", ("q", "message"))],
        final=1,
    )
    with pytest.raises(ConflictError):
        commit(redis_client, stale)
    assert redis_client.hgetall("t:b") == {b"status": b'"pending"'}
    assert not redis_client.exists("q")
    assert not redis_client.exists("meta")


def test_a_command_other_than_a_publish_is_refused_before_anything_is_sent(
    redis_client: redis.Redis,
) -> None:
    redis_client.set("precious", "1")
    change = Commit(meta_key="meta", publishes=[("flushall", ())])
    with pytest.raises(ValueError, match="refusing to commit a 'flushall' command"):
        commit(redis_client, change)
    assert redis_client.get("precious") == b"1"


def test_a_transition_overtaken_between_its_read_and_its_commit_decides_again(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    uppers = {f"u{i}": {"task": "tests.noop", "options": Q} for i in range(2)}
    sink = {"task": "tests.noop", "depends_on": list(uppers), "options": Q}
    workflow_id = runtime.submit_workflow({"tasks": {**uppers, "sink": sink}}, app=producer_app)
    assert queued(redis_client) == 2
    attempts: list[int] = []

    def end_u0_after_u1_sneaks_in(scheduler: DependencyScheduler) -> list[str]:
        scheduler.states["sink"]  # read the shared dependent (its version is now known)
        if not attempts:  # the other upstream ends between our read and our commit
            runtime.record_task_event(producer_app, workflow_id, "u1", Status.COMPLETED)
        attempts.append(1)
        return scheduler.record_status("u0", Status.COMPLETED)

    ready, _, _ = runtime.transition(
        runtime.redis_for(producer_app),
        workflow_id,
        end_u0_after_u1_sneaks_in,
        app=producer_app,
    )
    assert len(attempts) == 2  # the first commit conflicted, the second read saw u1's end
    assert ready == []
    assert queued(redis_client) == 3  # the roots and the sink, published once
    tasks: dict[str, Any] = runtime.workflow_status(workflow_id, app=producer_app)["tasks"]
    assert tasks["sink"]["status"] == Status.QUEUED
    assert tasks["u0"]["status"] == tasks["u1"]["status"] == Status.COMPLETED


def waiting_messages(client: redis.Redis) -> list[dict[str, Any]]:
    lists = redis_list_names(c.FILE_QUEUE)
    return [json.loads(raw) for name in lists for raw in client.lrange(name, 0, -1)]


def three_step_chain() -> dict[str, Any]:
    return {
        "tasks": {
            "a": {"task": "tests.noop", "options": Q},
            "b": {"task": "tests.noop", "depends_on": ["a"], "options": Q},
            "c": {"task": "tests.noop", "depends_on": ["b"], "options": Q},
        }
    }


def test_each_workflow_message_names_the_dependents_of_its_task(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    runtime.submit_workflow(three_step_chain(), app=producer_app)
    [root] = waiting_messages(redis_client)
    assert root["headers"][runtime.HEADER_TASK] == "a"
    assert root["headers"][runtime.HEADER_NEXT] == ["b"]


def test_a_wide_fan_out_leaves_the_dependents_out_of_the_message(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    wide = runtime.MAX_HINTED_DEPENDENTS + 1
    leaves = {
        f"l{i}": {"task": "tests.noop", "depends_on": ["a"], "options": Q} for i in range(wide)
    }
    runtime.submit_workflow(
        {"tasks": {"a": {"task": "tests.noop", "options": Q}, **leaves}}, app=producer_app
    )
    [root] = waiting_messages(redis_client)
    assert runtime.HEADER_NEXT not in root["headers"]


def test_a_process_new_to_a_workflow_reads_its_definition_and_states_in_one_round_trip(
    producer_app: WorkerApp, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm_up = runtime.submit_workflow(three_step_chain(), app=producer_app)
    runtime.record_task_event(producer_app, warm_up, "a", Status.COMPLETED)  # loads the script
    hinted = runtime.submit_workflow(three_step_chain(), app=producer_app)
    unhinted = runtime.submit_workflow(three_step_chain(), app=producer_app)
    sends: list[bytes] = []
    send: Any = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(command)
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    round_trips: dict[str, int] = {}
    for workflow_id, dependents in ((hinted, ["b"]), (unhinted, None)):
        runtime._cache._items.clear()  # as in a pool child that never saw the workflow
        sends.clear()
        runtime.record_task_event(
            producer_app, workflow_id, "a", Status.COMPLETED, dependents=dependents
        )
        round_trips[workflow_id] = len(sends)
    # Definition and states together, then the commit; without the hint, one more.
    assert round_trips == {hinted: 2, unhinted: 3}
    for workflow_id in (hinted, unhinted):
        tasks = runtime.workflow_status(workflow_id, app=producer_app)["tasks"]
        assert tasks["a"]["status"] == Status.COMPLETED
        assert tasks["b"]["status"] == Status.QUEUED
        assert tasks["c"]["status"] == Status.PENDING


def test_a_process_that_knows_the_workflow_records_an_end_with_the_carried_row_in_one_round_trip(
    producer_app: WorkerApp, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm_up = runtime.submit_workflow(three_step_chain(), app=producer_app)
    runtime.record_task_event(producer_app, warm_up, "a", Status.COMPLETED)  # loads the script
    carried = runtime.submit_workflow(three_step_chain(), app=producer_app)
    uncarried = runtime.submit_workflow(three_step_chain(), app=producer_app)
    stale = runtime.submit_workflow(three_step_chain(), app=producer_app)
    rows = {
        m["headers"][runtime.HEADER_WORKFLOW]: m["headers"][runtime.HEADER_ROW]
        for m in waiting_messages(redis_client)
    }
    # Changed after its message was sent (a timeout check would bump it): the row is stale.
    redis_client.hincrby(keys.workflow_task_key(stale, "a"), "v", 1)
    sends: list[bytes] = []
    send: Any = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(command)
        send(self, command, check_health)

    round_trips: dict[str, int] = {}
    for workflow_id, row in ((carried, rows[carried]), (uncarried, None), (stale, rows[stale])):
        runtime.workflow_status(workflow_id, app=producer_app)  # nothing to do with the cache
        runtime._cache.get_with_rows(runtime.redis_for(producer_app), workflow_id, [])
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
        sends.clear()
        runtime.record_task_event(producer_app, workflow_id, "a", Status.COMPLETED, row=row)
        round_trips[workflow_id] = len(sends)
        monkeypatch.undo()
    # The commit alone; the read then the commit; a commit that conflicts, the read, the commit.
    assert round_trips == {carried: 1, uncarried: 2, stale: 3}
    for workflow_id in (carried, uncarried, stale):
        tasks = runtime.workflow_status(workflow_id, app=producer_app)["tasks"]
        assert tasks["a"]["status"] == Status.COMPLETED
        assert tasks["b"]["status"] == Status.QUEUED
        assert tasks["c"]["status"] == Status.PENDING
    next_rows = [m["headers"][runtime.HEADER_ROW] for m in waiting_messages(redis_client)]
    assert all(row["v"] == "1" and json.loads(row["status"]) == Status.QUEUED for row in next_rows)
