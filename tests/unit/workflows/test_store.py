"""A workflow's task states in Redis, on a real server: a state round-trips through its hash,
and the versioned view reads only the tasks asked for, records the version of each one it
read, and reports the fields that changed and the tasks that became final."""

from __future__ import annotations

import json
from typing import cast

import pytest
import redis

from personal_assistant.workers import keys
from personal_assistant.workers.workflows.state_machine import TaskState
from personal_assistant.workers.workflows.store import (
    PRISTINE_ROW,
    VERSION_FIELD,
    VersionedStates,
    decode_state,
    encode_state,
    is_row,
    meta_of,
    read_states,
    submitted_row,
)
from personal_assistant.workers.workflows.trigger_rules import TERMINAL, Status

WORKFLOW = "wf-store"
TASKS = ("extract", "transform", "load")


def key(task_id: str) -> str:
    return keys.workflow_task_key(WORKFLOW, task_id)


def store_row(client: redis.Redis, task_id: str, state: TaskState, version: str | None) -> None:
    """Write a task's row as a submit or a commit leaves it (``version`` None: no ``v`` field)."""
    row = encode_state(state)
    if version is not None:
        row[VERSION_FIELD] = version
    client.hset(key(task_id), mapping=row)  # type: ignore[arg-type]


def hgetall_calls(client: redis.Redis) -> int:
    """HGETALL commands the server has run since the last CONFIG RESETSTAT."""
    stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    return stats.get("cmdstat_hgetall", {}).get("calls", 0)


@pytest.fixture
def stored(redis_client: redis.Redis) -> redis.Redis:
    """Three tasks of one workflow: extract done (version 4), the other two pristine."""
    done = TaskState(status=Status.COMPLETED, result={"rows": 3}, started_at=10.0, ended_at=12.5)
    store_row(redis_client, "extract", done, "4")
    store_row(redis_client, "transform", TaskState(upstream_outcomes=[1, 0, 0]), "1")
    store_row(redis_client, "load", TaskState(), None)  # written before versions were stored
    redis_client.config_resetstat()
    return redis_client


def view(client: redis.Redis) -> VersionedStates:
    return VersionedStates(client, WORKFLOW, TASKS, TERMINAL)


# --- Encoding --------------------------------------------------------------------------------


def test_a_state_written_to_its_hash_reads_back_equal(redis_client: redis.Redis) -> None:
    state = TaskState(
        status=Status.FAILED,
        result=[1, "two", {"three": 3.0}],
        error="ValueError: bad row",
        started_at=1_700_000_000.25,
        ended_at=1_700_000_003.5,
        upstream_outcomes=[2, 1, 0],
    )
    redis_client.hset(key("t"), mapping=encode_state(state))  # type: ignore[arg-type]

    fields = cast(dict[bytes, bytes], redis_client.hgetall(key("t")))

    assert decode_state(fields) == state


def test_every_encoded_field_is_one_json_value() -> None:
    encoded = encode_state(TaskState(status=Status.RUNNING, started_at=5.0))

    assert {name: json.loads(text) for name, text in encoded.items()} == {
        "status": "running",
        "error": None,
        "result": None,
        "started_at": 5.0,
        "ended_at": None,
        "upstream_outcomes": [0, 0, 0],
    }


def test_a_result_json_cannot_hold_is_stored_as_its_repr() -> None:
    encoded = encode_state(TaskState(result={"raw": b"bytes", "ids": {1, 2}}))

    decoded = decode_state({k.encode(): v.encode() for k, v in encoded.items()})

    assert decoded.result == {"raw": repr(b"bytes"), "ids": repr({1, 2})}


def test_the_version_field_is_not_part_of_the_decoded_state(stored: redis.Redis) -> None:
    fields = cast(dict[bytes, bytes], stored.hgetall(key("extract")))

    assert fields[VERSION_FIELD.encode()] == b"4"
    assert decode_state(fields).status == Status.COMPLETED


def test_read_states_returns_the_tasks_that_exist_in_one_round_trip(stored: redis.Redis) -> None:
    states = read_states(stored, WORKFLOW, ["extract", "load", "never-submitted"])

    assert set(states) == {"extract", "load"}
    assert states["extract"].result == {"rows": 3}
    assert states["load"] == TaskState()
    assert hgetall_calls(stored) == 3  # one pipeline of three reads


def test_meta_of_decodes_the_workflow_fields_and_is_empty_for_an_unknown_one(
    redis_client: redis.Redis,
) -> None:
    redis_client.hset(
        keys.workflow_meta_key(WORKFLOW),
        mapping={"name": json.dumps("nightly"), "remaining": 2, "failed_leaves": 0},
    )

    assert meta_of(redis_client, WORKFLOW) == {
        "name": "nightly",
        "remaining": 2,
        "failed_leaves": 0,
    }
    assert meta_of(redis_client, "wf-unknown") == {}


# --- The versioned view ------------------------------------------------------------------------


def test_nothing_is_read_until_a_task_is_asked_for(stored: redis.Redis) -> None:
    states = view(stored)

    assert len(states) == 3
    assert "load" in states
    assert hgetall_calls(stored) == 0
    assert states.versions() == {}


def test_only_the_task_asked_for_is_read_and_only_once(stored: redis.Redis) -> None:
    states = view(stored)

    assert states["extract"].status == Status.COMPLETED
    assert states["extract"].result == {"rows": 3}

    assert hgetall_calls(stored) == 1
    assert list(states.versions()) == [key("extract")]


def test_preload_reads_the_named_tasks_of_the_workflow_only(stored: redis.Redis) -> None:
    states = view(stored)

    states.preload(["transform", "load", "not-a-task-of-this-workflow"])

    assert hgetall_calls(stored) == 2
    assert set(states.versions()) == {key("transform"), key("load")}
    states["load"]  # already read: no round trip
    assert hgetall_calls(stored) == 2


def test_each_task_read_is_recorded_with_its_version_and_no_field_counts_as_zero(
    stored: redis.Redis,
) -> None:
    states = view(stored)

    list(states)  # iterating reads every task

    assert states.versions() == {key("extract"): "4", key("transform"): "1", key("load"): "0"}


def test_a_task_outside_the_workflow_or_without_a_row_is_a_key_error(
    stored: redis.Redis,
) -> None:
    states = VersionedStates(stored, WORKFLOW, [*TASKS, "lost"], TERMINAL)

    with pytest.raises(KeyError):
        states["not-a-task-of-this-workflow"]
    with pytest.raises(KeyError, match=r"no state for \['lost'\]"):
        states["lost"]


def test_tasks_of_a_submitted_workflow_cannot_be_removed(stored: redis.Redis) -> None:
    states = view(stored)

    with pytest.raises(TypeError, match="cannot be removed"):
        del states["load"]


def test_changes_are_the_fields_that_differ_from_what_was_read(stored: redis.Redis) -> None:
    states = view(stored)
    states["extract"]  # read, left alone
    transform = states["transform"]
    transform.status = Status.RUNNING
    transform.started_at = 20.0

    assert states.changes() == {
        key("transform"): {"status": json.dumps("running"), "started_at": "20.0"}
    }


def test_a_state_replaced_whole_is_diffed_against_what_was_read(stored: redis.Redis) -> None:
    states = view(stored)
    before = states["load"]

    states["load"] = TaskState(status=Status.SKIPPED, upstream_outcomes=before.upstream_outcomes)

    assert states.changes() == {key("load"): {"status": json.dumps("skipped")}}


def test_nothing_read_and_nothing_changed_means_no_changes(stored: redis.Redis) -> None:
    states = view(stored)
    states.preload(list(TASKS))

    assert states.changes() == {}
    assert states.newly_final() == []


def test_newly_final_lists_only_tasks_that_were_not_final_when_read(stored: redis.Redis) -> None:
    states = view(stored)
    states["extract"].error = "a final task changed again stays out of the list"
    states["transform"].status = Status.COMPLETED
    states["load"].status = Status.RUNNING

    assert states.newly_final() == ["transform"]


# --- rows known without a read -----------------------------------------------------------------


def test_a_submitted_row_is_at_version_0_only_while_it_is_pristine() -> None:
    assert submitted_row(TaskState()) == PRISTINE_ROW
    assert submitted_row(TaskState())[VERSION_FIELD] == "0"
    assert submitted_row(TaskState(status=Status.QUEUED))[VERSION_FIELD] == "1"
    assert submitted_row(TaskState(upstream_outcomes=[0, 0, 1]))[VERSION_FIELD] == "1"


def test_a_row_is_recognised_by_its_exact_shape() -> None:
    assert is_row(dict(PRISTINE_ROW))
    assert not is_row({**PRISTINE_ROW, VERSION_FIELD: "-1"})
    assert not is_row({**PRISTINE_ROW, "extra": "1"})
    assert not is_row({k: v for k, v in PRISTINE_ROW.items() if k != "status"})
    assert not is_row({**PRISTINE_ROW, "status": 3})
    assert not is_row(["not", "a", "row"])
    assert not is_row(None)


def test_expected_rows_are_used_without_a_read(stored: redis.Redis) -> None:
    states = view(stored)
    carried = {**encode_state(TaskState(status=Status.COMPLETED)), VERSION_FIELD: "4"}
    states.expect({"extract": carried, "load": dict(PRISTINE_ROW)}, pristine=["load"])

    assert states["extract"].status == Status.COMPLETED
    assert states["load"].status == Status.PENDING
    assert hgetall_calls(stored) == 0
    assert states.versions() == {key("extract"): "4", key("load"): "0"}
    assert states.strict_keys() == {key("load")}


def test_an_expected_row_never_replaces_one_already_read(stored: redis.Redis) -> None:
    states = view(stored)
    states.preload(["transform"])
    states.expect({"transform": dict(PRISTINE_ROW)}, pristine=["transform"])

    assert states["transform"].upstream_outcomes == [1, 0, 0]
    assert states.versions() == {key("transform"): "1"}
    assert states.strict_keys() == frozenset()


def test_the_row_after_a_change_is_what_the_commit_will_store(stored: redis.Redis) -> None:
    states = view(stored)
    states.preload(["transform", "load"])
    states["transform"].status = Status.QUEUED

    after = states.row_after("transform")
    assert after == {
        **encode_state(TaskState(status=Status.QUEUED, upstream_outcomes=[1, 0, 0])),
        VERSION_FIELD: "2",
    }
    assert states.row_after("load")[VERSION_FIELD] == "0"  # unchanged: version unchanged
