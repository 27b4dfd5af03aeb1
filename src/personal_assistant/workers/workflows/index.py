"""Finding a workflow again: every workflow indexed by its creation time, newest first.

Two sorted sets (keys.py) keep the index exactly as long as the workflows themselves:

- ``keys.WORKFLOWS_INDEX_KEY``: id -> created_at, added by the transaction that stores the
  workflow (runtime.submit_workflow), so a workflow is listed exactly when its keys exist;
- ``keys.WORKFLOWS_EXPIRING_KEY``: id -> the time its keys expire, added by the transaction that
  ends it (runtime._end), which gives the keys that same expiry (``FINISHED_TTL_S``). A running
  workflow's keys never expire, and it is not in this set.

Every submit runs :data:`_TRIM` in its transaction: the ids whose keys have expired leave both
sets, at most :data:`TRIM_BATCH` at a time (each submit adds one id, so the trim keeps up with
any rate). A list also drops any id whose keys are gone (deleted by hand, say).

Workflows submitted before the index existed are not listed (their ``status``, ``watch`` and
``cancel`` work as before): :func:`reindex` (``workflow reindex``) adds them, with the expiry
their keys have, from one SCAN of the workflow keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import redis
from redis.client import Pipeline

from personal_assistant.workers import keys

# The states a workflow's meta holds: running until its last task is final, then one of the
# three ends (runtime._end).
WORKFLOW_STATES: Final = ("running", "completed", "failed", "cancelled")
# Expired ids removed by one submit: one id comes in per submit, so any batch above one keeps
# the index bounded; 100 clears a backlog (a reindex, a week of a busy day expiring) quickly
# while one script stays a few hundred microseconds.
TRIM_BATCH: Final = 100
# Ids whose meta one round trip of a listing reads: a page of the table and more, few bytes each.
READ_BATCH: Final = 200
# Keys one SCAN step of a reindex asks for (Redis's COUNT hint).
SCAN_COUNT: Final = 1000

_META_FIELDS: Final = ("name", "state", "created_at", "ended_at", "tasks", "remaining")
_META_SUFFIX: Final = ":meta"

# KEYS: the index, the expiry set; ARGV: now, batch. Ids whose keys expired by now leave both.
_TRIM: Final = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('ZREM', KEYS[2], unpack(gone))
end
return #gone
"""


def record_submit(pipe: Pipeline, workflow_id: str, created_at: float) -> None:
    """Index a workflow, in the transaction that stores it, and trim what expired."""
    pipe.zadd(keys.WORKFLOWS_INDEX_KEY, {workflow_id: created_at})
    trim(pipe, created_at)


def record_end(pipe: Pipeline, workflow_id: str, expires_at: float) -> None:
    """Note when an ended workflow's keys expire, in the transaction that sets that expiry."""
    pipe.zadd(keys.WORKFLOWS_EXPIRING_KEY, {workflow_id: expires_at})


def trim(client: redis.Redis | Pipeline, now: float) -> Any:
    """Remove up to TRIM_BATCH ids whose keys expired by ``now`` (the count, or the pipeline)."""
    return client.eval(
        _TRIM, 2, keys.WORKFLOWS_INDEX_KEY, keys.WORKFLOWS_EXPIRING_KEY, now, TRIM_BATCH
    )


@dataclass(frozen=True)
class WorkflowSummary:
    """One line of ``workflow list``: what the workflow's meta says about it."""

    id: str
    name: str | None
    state: str | None
    created_at: float | None
    ended_at: float | None
    tasks: int | None  # None for workflows submitted before the meta counted them
    remaining: int | None  # tasks not final yet

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``workflow list --json`` (one object per line)."""
        return asdict(self)


def _value(raw: bytes | None) -> Any:
    """One meta field (a JSON value; a counter is a bare integer, JSON too)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _summary(workflow_id: str, raw: list[bytes | None]) -> WorkflowSummary:
    name, state, created, ended, tasks, remaining = (_value(v) for v in raw)
    return WorkflowSummary(
        id=workflow_id,
        name=None if name is None else str(name),
        state=None if state is None else str(state),
        created_at=_number(created),
        ended_at=_number(ended),
        tasks=tasks if isinstance(tasks, int) else None,
        remaining=remaining if isinstance(remaining, int) else None,
    )


def list_workflows(
    client: redis.Redis, *, state: str | None = None, since: float | None = None, limit: int = 50
) -> list[WorkflowSummary]:
    """Up to ``limit`` workflows created at or after ``since``, in ``state`` if given, newest
    first. Ids whose keys are gone are dropped from the index on the way."""
    found: list[WorkflowSummary] = []
    seen: set[str] = set()
    gone: list[str] = []
    offset = 0
    low = "-inf" if since is None else since
    while len(found) < limit:
        page = cast(
            list[bytes],
            client.zrevrangebyscore(
                keys.WORKFLOWS_INDEX_KEY, "+inf", low, start=offset, num=READ_BATCH
            ),
        )
        if not page:
            break
        offset += len(page)
        ids = [raw.decode() for raw in page]
        with client.pipeline(transaction=False) as batch:
            for workflow_id in ids:
                batch.hmget(keys.workflow_meta_key(workflow_id), list(_META_FIELDS))
            metas = cast(list[list[bytes | None]], batch.execute())
        for workflow_id, raw in zip(ids, metas, strict=True):
            if workflow_id in seen:  # a submit during the listing shifts the pages by one
                continue
            seen.add(workflow_id)
            if all(value is None for value in raw):
                gone.append(workflow_id)
                continue
            summary = _summary(workflow_id, raw)
            if state is None or summary.state == state:
                found.append(summary)
                if len(found) == limit:
                    break
    if gone:
        with client.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.WORKFLOWS_INDEX_KEY, *gone)
            pipe.zrem(keys.WORKFLOWS_EXPIRING_KEY, *gone)
            pipe.execute()
    return found


def _ids_of(meta_keys: Iterable[bytes]) -> list[str]:
    """Workflow ids of ``pa:wf:<id>:meta`` keys (a task named ``meta`` has a longer key)."""
    prefix = keys.WORKFLOW_KEY_PREFIX
    ids = []
    for raw in meta_keys:
        key = raw.decode("utf-8", "replace")
        workflow_id = key[len(prefix) : -len(_META_SUFFIX)]
        if workflow_id and ":" not in workflow_id and key == keys.workflow_meta_key(workflow_id):
            ids.append(workflow_id)
    return ids


def reindex(client: redis.Redis, now: float) -> int:
    """Index every stored workflow (those submitted before the index existed); return how many
    were added. Each ended one gets the expiry its keys have."""
    added = 0
    pattern = f"{keys.WORKFLOW_KEY_PREFIX}*{_META_SUFFIX}"
    batch_keys: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
        batch_keys.append(cast(bytes, key))
        if len(batch_keys) >= SCAN_COUNT:
            added += _reindex_batch(client, _ids_of(batch_keys), now)
            batch_keys = []
    return added + _reindex_batch(client, _ids_of(batch_keys), now)


def _reindex_batch(client: redis.Redis, ids: list[str], now: float) -> int:
    if not ids:
        return 0
    with client.pipeline(transaction=False) as batch:
        for workflow_id in ids:
            meta = keys.workflow_meta_key(workflow_id)
            batch.hmget(meta, ["created_at", "started_at"])
            batch.pttl(meta)
        replies = batch.execute()
    created: dict[str, float] = {}
    expiring: dict[str, float] = {}
    for i, workflow_id in enumerate(ids):
        fields, ttl_ms = replies[2 * i], int(replies[2 * i + 1])
        when = next((t for t in (_number(_value(f)) for f in fields) if t is not None), None)
        if when is None:  # gone since the SCAN, or not a workflow's meta
            continue
        created[workflow_id] = when
        if ttl_ms > 0:
            expiring[workflow_id] = now + ttl_ms / 1000
    if not created:
        return 0
    with client.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.WORKFLOWS_INDEX_KEY, created)
        if expiring:
            pipe.zadd(keys.WORKFLOWS_EXPIRING_KEY, expiring)
        return int(pipe.execute()[0])


# A duration: one or more <number><unit> parts (1h30m); units s, m, h, d, w.
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION: Final = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
# Longer is not a time anyone types: refused before any parsing.
_MAX_SINCE_CHARS: Final = 64
SINCE_HELP: Final = (
    "a duration back from now (30m, 1h, 2d, 1h30m) or an ISO time (UTC unless it has an offset)"
)


def since_time(text: str, now: float) -> float:
    """The Unix time ``text`` names: a duration back from ``now``, or an ISO date or time (UTC
    unless it carries an offset). ValueError saying what is accepted otherwise."""
    value = text.strip()
    if len(value) <= _MAX_SINCE_CHARS:
        if _DURATION.fullmatch(value):
            return now - sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
        moment = _iso_time(value)
        if moment is not None:
            return moment
    raise ValueError(f"{text[:_MAX_SINCE_CHARS]!r} is not {SINCE_HELP}")


def _iso_time(text: str) -> float | None:
    """The Unix time of an ISO date or time (UTC unless it has an offset), or None."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
