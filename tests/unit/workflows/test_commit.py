"""The compare-and-set commit of a workflow transition, on a real Redis: a commit applies its
writes and bumps the written tasks' versions; one whose checked version changed raises
ConflictError and writes nothing; the workflow's final counter counts down to zero."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import cast

import pytest
import redis

from personal_assistant.workers import keys
from personal_assistant.workers.workflows.commit import Commit, ConflictError, commit
from personal_assistant.workers.workflows.state_machine import TaskState
from personal_assistant.workers.workflows.store import (
    PRISTINE_ROW,
    VERSION_FIELD,
    VersionedStates,
    encode_state,
)
from personal_assistant.workers.workflows.trigger_rules import TERMINAL, Status

WORKFLOW = "wf-commit"
TASKS = ("a", "b", "c")
META = keys.workflow_meta_key(WORKFLOW)
QUEUE = "commit_test_queue"


def key(task_id: str) -> str:
    return keys.workflow_task_key(WORKFLOW, task_id)


def row(client: redis.Redis, task_id: str) -> dict[str, str]:
    raw = cast(dict[bytes, bytes], client.hgetall(key(task_id)))
    return {k.decode(): v.decode() for k, v in raw.items()}


def counters(client: redis.Redis) -> dict[str, int]:
    raw = cast(dict[bytes, bytes], client.hgetall(META))
    return {k.decode(): int(v) for k, v in raw.items() if k in (b"remaining", b"failed_leaves")}


@pytest.fixture
def submitted(redis_client: redis.Redis) -> redis.Redis:
    """A workflow of three pending tasks at version 1, none of them final yet."""
    for task_id in TASKS:
        fields = {**encode_state(TaskState()), VERSION_FIELD: "1"}
        redis_client.hset(key(task_id), mapping=fields)  # type: ignore[arg-type]
    redis_client.hset(META, mapping={"remaining": len(TASKS), "failed_leaves": 0})
    return redis_client


def view(client: redis.Redis) -> VersionedStates:
    return VersionedStates(client, WORKFLOW, TASKS, TERMINAL)


def ending(
    states: VersionedStates, task_id: str, status: str, *, failed_leaf: bool = False
) -> Commit:
    """The commit of ``task_id`` ending with ``status``, as a transition builds it."""
    states[task_id].status = status
    states[task_id].ended_at = 100.0
    return Commit(
        meta_key=META,
        checks=list(states.versions().items()),
        writes=states.changes(),
        final=len(states.newly_final()),
        failed_leaves=int(failed_leaf),
    )


def test_a_commit_applies_its_writes_and_bumps_the_version_of_each_task_written(
    submitted: redis.Redis,
) -> None:
    states = view(submitted)
    states.preload(["a", "b"])
    states["a"].status = Status.RUNNING
    states["a"].started_at = 50.0
    change = Commit(meta_key=META, checks=list(states.versions().items()), writes=states.changes())

    assert commit(submitted, change) is None  # nothing became final: no counters

    assert row(submitted, "a") == {
        **encode_state(TaskState(status=Status.RUNNING, started_at=50.0)),
        VERSION_FIELD: "2",
    }
    assert row(submitted, "b")[VERSION_FIELD] == "1"  # read and checked, not written
    assert counters(submitted) == {"remaining": 3, "failed_leaves": 0}


def test_the_next_reader_sees_the_committed_state_at_its_new_version(
    submitted: redis.Redis,
) -> None:
    commit(submitted, ending(view(submitted), "a", Status.COMPLETED))

    later = view(submitted)

    assert later["a"].status == Status.COMPLETED
    assert later.versions() == {key("a"): "2"}


def test_a_commit_publishes_its_messages_with_its_writes(submitted: redis.Redis) -> None:
    states = view(submitted)
    states["b"].status = Status.QUEUED
    change = Commit(
        meta_key=META,
        checks=list(states.versions().items()),
        writes=states.changes(),
        publishes=[("lpush", (QUEUE, b"message-of-b"))],
    )

    commit(submitted, change)

    assert submitted.lrange(QUEUE, 0, -1) == [b"message-of-b"]
    assert json.loads(row(submitted, "b")["status"]) == Status.QUEUED


def test_a_commit_whose_checked_version_changed_raises_and_writes_nothing(
    submitted: redis.Redis,
) -> None:
    first, second = view(submitted), view(submitted)
    first.preload(["a", "c"])
    second.preload(["b", "c"])  # both read c, the dependent they share
    first["c"].status = Status.QUEUED  # a's end makes c ready
    commit(submitted, ending(first, "a", Status.COMPLETED))
    before = {task_id: row(submitted, task_id) for task_id in TASKS}

    stale = ending(second, "b", Status.FAILED, failed_leaf=True)
    stale.publishes = [("lpush", (QUEUE, b"message-of-c"))]
    with pytest.raises(ConflictError):
        commit(submitted, stale)

    assert {task_id: row(submitted, task_id) for task_id in TASKS} == before
    assert counters(submitted) == {"remaining": 2, "failed_leaves": 0}
    assert not submitted.exists(QUEUE)


def test_a_conflicting_transition_read_again_commits(submitted: redis.Redis) -> None:
    commit(submitted, ending(view(submitted), "a", Status.COMPLETED))
    stale = Commit(meta_key=META, checks=[(key("a"), "1")], writes={key("b"): {"error": "null"}})
    with pytest.raises(ConflictError):
        commit(submitted, stale)

    fresh = view(submitted)
    fresh["a"]  # read again: version 2 now
    assert commit(submitted, ending(fresh, "b", Status.COMPLETED)) == (1, 0)


def test_the_final_counter_counts_down_as_each_task_ends(submitted: redis.Redis) -> None:
    seen = [
        commit(submitted, ending(view(submitted), "a", Status.COMPLETED)),
        commit(submitted, ending(view(submitted), "b", Status.FAILED, failed_leaf=True)),
        commit(submitted, ending(view(submitted), "c", Status.SKIPPED)),
    ]

    assert seen == [(2, 0), (1, 1), (0, 1)]
    assert counters(submitted) == {"remaining": 0, "failed_leaves": 1}


def test_a_commit_may_make_several_tasks_final_at_once(submitted: redis.Redis) -> None:
    states = view(submitted)
    for task_id in TASKS:
        states[task_id].status = Status.CANCELLED
    change = Commit(
        meta_key=META,
        checks=list(states.versions().items()),
        writes=states.changes(),
        final=len(states.newly_final()),
    )

    assert commit(submitted, change) == (0, 0)
    assert all(row(submitted, t)[VERSION_FIELD] == "2" for t in TASKS)


def test_a_command_other_than_a_publish_is_refused_and_nothing_is_written(
    submitted: redis.Redis,
) -> None:
    states = view(submitted)
    states["a"].status = Status.QUEUED
    change = Commit(
        meta_key=META,
        checks=list(states.versions().items()),
        writes=states.changes(),
        publishes=[("flushall", ())],
    )

    with pytest.raises(ValueError, match="refusing to commit a 'flushall' command"):
        commit(submitted, change)

    assert row(submitted, "a")[VERSION_FIELD] == "1"


def test_a_row_taken_as_pristine_commits_while_it_still_is(submitted: redis.Redis) -> None:
    submitted.hset(key("c"), mapping=PRISTINE_ROW)  # type: ignore[arg-type]
    states = view(submitted)
    states.expect({"c": dict(PRISTINE_ROW)}, pristine=["c"])
    step = ending(states, "c", Status.COMPLETED)

    commit(submitted, replace(step, strict=states.strict_keys()))
    assert row(submitted, "c")[VERSION_FIELD] == "1"


def test_a_row_taken_as_pristine_conflicts_when_its_version_field_is_missing(
    submitted: redis.Redis,
) -> None:
    """A row a submit wrote before versions were stored may hold anything: read it instead."""
    submitted.hset(key("c"), mapping=encode_state(TaskState(status=Status.SKIPPED)))  # type: ignore[arg-type]
    submitted.hdel(key("c"), VERSION_FIELD)
    states = view(submitted)
    states.expect({"c": dict(PRISTINE_ROW)}, pristine=["c"])
    step = ending(states, "c", Status.COMPLETED)

    with pytest.raises(ConflictError):
        commit(submitted, replace(step, strict=states.strict_keys()))
    assert json.loads(row(submitted, "c")["status"]) == Status.SKIPPED
    assert VERSION_FIELD not in row(submitted, "c")


def test_a_carried_row_whose_version_moved_on_conflicts(submitted: redis.Redis) -> None:
    states = view(submitted)
    stale = {**encode_state(TaskState(status=Status.QUEUED)), VERSION_FIELD: "1"}
    submitted.hincrby(key("a"), VERSION_FIELD, 1)  # a timeout check changed it meanwhile
    states.expect({"a": stale})

    with pytest.raises(ConflictError):
        commit(submitted, ending(states, "a", Status.COMPLETED))
