"""A worker's task-count snapshots in Redis, and the task rates computed from two of them.

Keys (in the broker's Redis database; keys.py says what bounds them):

- ``keys.metrics_snapshot_key(hostname)`` and ``keys.metrics_snapshot_prev_key(hostname)``: a
  worker's two latest task-count snapshots, JSON
  ``{"ts": float, "hostname": str, "tasks": {name: {"count": int, ...}}}``, indexed by the
  sorted set ``keys.METRICS_SNAPSHOTS_INDEX_KEY`` (hostname -> ts), so readers never SCAN.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast

import redis

from personal_assistant.workers import keys

logger = logging.getLogger(__name__)

# How long a silent worker stays listed (as down) before it is pruned. It must outlast the
# `for:` of any alert on celery_worker_up == 0, or the series vanishes before the alert fires;
# a day also leaves the overnight crash visible in the morning. Snapshots live as long by default;
# the worker registry (monitoring.liveness) imports it from here.
DEFAULT_RETENTION_S = 86_400.0


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _json_or(value: bytes | str | None, default: Any) -> Any:
    raw = _text(value)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


# --- Task-count snapshots -------------------------------------------------------------------


class TaskStats(TypedDict):
    """One task's totals in a snapshot (``count`` = finished runs, including failed ones)."""

    count: int
    failed: NotRequired[int]
    p95: NotRequired[float | None]


class Snapshot(TypedDict):
    """A worker's task totals at ``ts``."""

    ts: float
    hostname: NotRequired[str]
    tasks: dict[str, TaskStats]


# Rotate current -> prev and write the new current atomically, so a reader never sees two equal
# snapshots or a prev newer than the current.
_SNAPSHOT_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
  redis.call('SET', KEYS[2], current, 'EX', ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
return 1
"""


def write_snapshot(
    client: redis.Redis,
    hostname: str,
    tasks: Mapping[str, Mapping[str, Any]],
    now: float | None = None,
    *,
    ttl: float = DEFAULT_RETENTION_S,
) -> Snapshot:
    """Store ``hostname``'s task totals as its current snapshot; the old one becomes ``:prev``.

    ``tasks`` maps task name to at least ``{"count": <finished runs so far>}`` (monotonic per
    process) plus optional ``failed`` and ``p95`` (seconds). Snapshots expire after ``ttl``.
    """
    ts = time.time() if now is None else now
    snapshot: Snapshot = {
        "ts": float(ts),
        "hostname": hostname,
        "tasks": {name: cast("TaskStats", dict(stats)) for name, stats in tasks.items()},
    }
    client.eval(
        _SNAPSHOT_SCRIPT,
        3,
        keys.metrics_snapshot_key(hostname),
        keys.metrics_snapshot_prev_key(hostname),
        keys.METRICS_SNAPSHOTS_INDEX_KEY,
        json.dumps(snapshot, default=repr),
        repr(float(ts)),
        str(max(1, int(ttl))),
        hostname,
    )
    return snapshot


def _parse_snapshot(raw: bytes | str | None, hostname: str) -> Snapshot | None:
    data = _json_or(raw, None)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        if raw is not None:
            logger.warning("ignoring malformed metrics snapshot of %s", hostname)
        return None
    try:
        data["ts"] = float(data["ts"])
    except (KeyError, TypeError, ValueError):
        logger.warning("ignoring metrics snapshot of %s without a valid ts", hostname)
        return None
    return cast("Snapshot", data)


def read_snapshots(
    client: redis.Redis, now: float | None = None, *, ttl: float = DEFAULT_RETENTION_S
) -> dict[str, tuple[Snapshot, Snapshot | None]]:
    """Every host's (current, previous) snapshot; hosts whose snapshots expired are dropped."""
    ts = time.time() if now is None else now
    index = keys.METRICS_SNAPSHOTS_INDEX_KEY
    client.zremrangebyscore(index, "-inf", f"({ts - ttl!r}")
    hosts = [_text(h) or "" for h in cast("list[bytes]", client.zrange(index, 0, -1))]
    if not hosts:
        return {}
    names = [
        key
        for host in hosts
        for key in (keys.metrics_snapshot_key(host), keys.metrics_snapshot_prev_key(host))
    ]
    raws = cast("list[bytes | None]", client.mget(names))
    result: dict[str, tuple[Snapshot, Snapshot | None]] = {}
    for i, host in enumerate(hosts):
        current = _parse_snapshot(raws[2 * i], host)
        if current is not None:
            result[host] = (current, _parse_snapshot(raws[2 * i + 1], host))
    return result


def task_rates(current: Snapshot, prev: Snapshot | None) -> dict[str, float | None]:
    """Finished runs per second of each task between the two snapshots (None without a prev).

    A count lower than before means the worker restarted (its counters began again at 0); as
    Prometheus's ``rate()`` does, the new count is then taken as the increase.
    """
    if prev is None:
        return dict.fromkeys(current["tasks"])
    elapsed = current["ts"] - prev["ts"]
    if elapsed <= 0:
        return dict.fromkeys(current["tasks"])
    rates: dict[str, float | None] = {}
    for name, stats in current["tasks"].items():
        count = int(stats.get("count", 0))
        before = int(prev["tasks"].get(name, {"count": 0}).get("count", 0))
        increase = count - before if count >= before else count
        rates[name] = increase / elapsed
    return rates
