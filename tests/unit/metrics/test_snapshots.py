"""Task snapshots on a real Redis: written with the previous one kept, read back skipping what
is malformed or expired, and turned into per-task rates."""

from __future__ import annotations

import json
import logging

import pytest
import redis

from personal_assistant.workers import keys
from personal_assistant.workers.metrics.snapshots import (
    Snapshot,
    read_snapshots,
    task_rates,
    write_snapshot,
)

T0 = 1_700_000_000.0


def test_write_snapshot_rotates_current_to_prev(redis_client: redis.Redis) -> None:
    write_snapshot(redis_client, "w1@host", {"a": {"count": 10, "failed": 1, "p95": 0.2}}, T0)
    [(current, prev)] = read_snapshots(redis_client, now=T0).values()
    assert prev is None
    assert current["tasks"]["a"]["count"] == 10

    write_snapshot(redis_client, "w1@host", {"a": {"count": 70, "failed": 2, "p95": 0.3}}, T0 + 20)
    snapshots = read_snapshots(redis_client, now=T0 + 20)
    current, prev = snapshots["w1@host"]
    assert prev is not None
    assert (prev["ts"], current["ts"]) == (T0, T0 + 20)
    assert task_rates(current, prev) == {"a": pytest.approx(3.0)}
    ttl = int(redis_client.ttl(keys.metrics_snapshot_prev_key("w1@host")))
    assert 86_000 < ttl <= 86_400


def test_task_rates_edge_cases() -> None:
    prev: Snapshot = {"ts": T0, "tasks": {"a": {"count": 100}, "gone": {"count": 5}}}
    restarted: Snapshot = {"ts": T0 + 10, "tasks": {"a": {"count": 20}, "new": {"count": 5}}}
    # A lower count means the worker restarted: the new count is the increase (like rate()).
    assert task_rates(restarted, prev) == {"a": 2.0, "new": 0.5}
    assert task_rates(restarted, None) == {"a": None, "new": None}
    same_time: Snapshot = {"ts": T0, "tasks": {"a": {"count": 101}}}
    assert task_rates(same_time, prev) == {"a": None}


def test_read_snapshots_skips_malformed_and_expired(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    write_snapshot(redis_client, "good@host", {"a": {"count": 1}}, T0)
    write_snapshot(redis_client, "old@host", {"a": {"count": 1}}, T0 - 90_000)
    redis_client.zadd(keys.METRICS_SNAPSHOTS_INDEX_KEY, {"bad@host": T0})
    redis_client.set(keys.metrics_snapshot_key("bad@host"), b"{not json")
    redis_client.zadd(keys.METRICS_SNAPSHOTS_INDEX_KEY, {"nots@host": T0})
    redis_client.set(keys.metrics_snapshot_key("nots@host"), json.dumps({"tasks": {}}))

    with caplog.at_level(logging.WARNING):
        snapshots = read_snapshots(redis_client, now=T0)

    assert list(snapshots) == ["good@host"]
    assert redis_client.zscore(keys.METRICS_SNAPSHOTS_INDEX_KEY, "old@host") is None
    assert any("malformed" in r.getMessage() for r in caplog.records)
    assert any("without a valid ts" in r.getMessage() for r in caplog.records)
