"""The index of workflows by creation time, on a real Redis: newest first, filtered by state and
time, trimmed exactly when a workflow's keys expire, and rebuilt for workflows stored before it;
and the ``--since`` times it is asked for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import cast

import pytest
import redis

from personal_assistant.workers import keys
from personal_assistant.workers.workflows import index
from personal_assistant.workers.workflows.index import (
    READ_BATCH,
    TRIM_BATCH,
    list_workflows,
    record_end,
    record_submit,
    reindex,
    since_time,
)

NOW = 1_800_000_000.0
WEEK = 7 * 86_400


def store(
    client: redis.Redis,
    workflow_id: str,
    created_at: float,
    state: str = "running",
    *,
    indexed: bool = True,
    ttl: int | None = None,
) -> None:
    """A workflow's meta as a submit writes it, indexed in the same transaction (or not: a
    workflow stored before the index existed)."""
    meta = {"name": f"n-{workflow_id}", "state": state, "created_at": created_at, "tasks": 3}
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(
            keys.workflow_meta_key(workflow_id), mapping={k: json.dumps(v) for k, v in meta.items()}
        )
        pipe.hset(keys.workflow_meta_key(workflow_id), "remaining", 1)  # a counter: HINCRBY's
        if indexed:
            record_submit(pipe, workflow_id, created_at)
        if ttl is not None:
            pipe.expire(keys.workflow_meta_key(workflow_id), ttl)
        pipe.execute()


def indexed(client: redis.Redis) -> list[str]:
    return [m.decode() for m in cast(list[bytes], client.zrange(keys.WORKFLOWS_INDEX_KEY, 0, -1))]


def ids(client: redis.Redis, **filters: object) -> list[str]:
    return [row.id for row in list_workflows(client, **filters)]  # type: ignore[arg-type]


def test_workflows_are_listed_newest_first_with_what_their_meta_says(
    redis_client: redis.Redis,
) -> None:
    for i, workflow_id in enumerate(["old", "mid", "new"]):
        store(redis_client, workflow_id, NOW + i)

    rows = list_workflows(redis_client)

    assert [r.id for r in rows] == ["new", "mid", "old"]
    assert rows[0].to_dict() == {
        "id": "new",
        "name": "n-new",
        "state": "running",
        "created_at": NOW + 2,
        "ended_at": None,
        "tasks": 3,
        "remaining": 1,
    }


def test_state_since_and_limit_narrow_the_list(redis_client: redis.Redis) -> None:
    store(redis_client, "a", NOW - 7200, "completed")
    store(redis_client, "b", NOW - 1800, "failed")
    store(redis_client, "c", NOW - 600, "completed")
    store(redis_client, "d", NOW - 60, "running")

    assert ids(redis_client, state="completed") == ["c", "a"]
    assert ids(redis_client, since=NOW - 3600) == ["d", "c", "b"]
    assert ids(redis_client, state="completed", since=NOW - 3600) == ["c"]
    assert ids(redis_client, limit=2) == ["d", "c"]


def test_a_state_filter_reads_past_the_first_page_of_the_index(redis_client: redis.Redis) -> None:
    store(redis_client, "the-failed-one", NOW)
    redis_client.hset(keys.workflow_meta_key("the-failed-one"), "state", json.dumps("failed"))
    for i in range(READ_BATCH + 5):
        store(redis_client, f"r{i}", NOW + 1 + i)

    assert ids(redis_client, state="failed") == ["the-failed-one"]


def test_an_ended_workflow_leaves_the_index_when_its_keys_expire_not_before(
    redis_client: redis.Redis,
) -> None:
    store(redis_client, "ended", NOW)
    store(redis_client, "running-for-weeks", NOW - 3 * WEEK)
    with redis_client.pipeline(transaction=True) as pipe:
        record_end(pipe, "ended", NOW + 10 + WEEK)
        pipe.execute()

    assert index.trim(redis_client, NOW + WEEK) == 0  # its keys are still there
    assert sorted(indexed(redis_client)) == ["ended", "running-for-weeks"]
    assert index.trim(redis_client, NOW + 11 + WEEK) == 1
    assert indexed(redis_client) == ["running-for-weeks"]  # old, but running: kept
    assert redis_client.zcard(keys.WORKFLOWS_EXPIRING_KEY) == 0


def test_each_submit_trims_a_bounded_batch_of_expired_workflows(redis_client: redis.Redis) -> None:
    expired = {f"x{i}": NOW - 1 for i in range(TRIM_BATCH + 20)}
    redis_client.zadd(keys.WORKFLOWS_INDEX_KEY, expired)
    redis_client.zadd(keys.WORKFLOWS_EXPIRING_KEY, expired)

    store(redis_client, "new", NOW)
    assert redis_client.zcard(keys.WORKFLOWS_INDEX_KEY) == 21  # 20 expired left, and "new"
    store(redis_client, "newer", NOW + 1)
    assert indexed(redis_client) == ["new", "newer"]


def test_an_id_whose_keys_are_gone_is_dropped_when_a_list_meets_it(
    redis_client: redis.Redis,
) -> None:
    store(redis_client, "kept", NOW)
    store(redis_client, "deleted", NOW + 1)
    redis_client.delete(keys.workflow_meta_key("deleted"))

    assert ids(redis_client) == ["kept"]
    assert indexed(redis_client) == ["kept"]


def test_reindex_adds_workflows_stored_before_the_index_with_the_expiry_of_their_keys(
    redis_client: redis.Redis,
) -> None:
    store(redis_client, "legacy-running", NOW - 100, indexed=False)
    store(redis_client, "legacy-ended", NOW - 50, "completed", indexed=False, ttl=3600)
    store(redis_client, "new", NOW)
    # A task named "meta" has a key ending in :meta too; it is not a workflow.
    redis_client.hset(keys.workflow_task_key("new", "meta"), "status", json.dumps("pending"))

    assert reindex(redis_client, NOW) == 2
    assert ids(redis_client) == ["new", "legacy-ended", "legacy-running"]
    expiry = redis_client.zscore(keys.WORKFLOWS_EXPIRING_KEY, "legacy-ended")
    assert expiry is not None and NOW + 3500 < expiry <= NOW + 3600
    assert redis_client.zscore(keys.WORKFLOWS_EXPIRING_KEY, "legacy-running") is None
    assert reindex(redis_client, NOW) == 0  # idempotent


# --- --since --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds_back"),
    [("30m", 1800), ("1h", 3600), ("2d", 172_800), ("1h30m", 5400), ("1w", WEEK), ("45s", 45)],
)
def test_a_duration_is_that_long_before_now(text: str, seconds_back: float) -> None:
    assert since_time(text, NOW) == NOW - seconds_back


def test_an_iso_time_without_an_offset_is_utc() -> None:
    expected = datetime(2026, 12, 2, 8, 0, tzinfo=UTC).timestamp()
    assert since_time("2026-12-02T08:00", NOW) == expected
    assert since_time("2026-12-02 08:00:00", NOW) == expected
    assert since_time("2026-12-02T09:00+01:00", NOW) == expected
    assert since_time("2026-12-02", NOW) == datetime(2026, 12, 2, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", ["", "yesterday", "1y", "-1h", "2026-13-01", "1" * 500 + "s"])
def test_anything_else_is_refused_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration back from now \(30m, 1h, 2d"):
        since_time(text, NOW)
