"""The run claim: each (beat entry, due time) is sent at most once, by the lock's current holder.

Before a beat sends an entry's run it claims it with ``claim_run``: one Lua script that checks,
in the same atomic step,

(a) that the beat lock (``beat_lock``) carries the caller's fencing token, so a beat that paused
    past its lock timeout, or never held the lock, cannot send; and
(b) that the entry's recorded last due time is older than this due time, so a run already
    claimed (by this beat before a restart, or by another beat) is not claimed again,

and then records the decision in the entry's hash: ``last_due`` (the time decided, run or
skipped), ``next_due``; for a run ``last_run`` (its time), ``run_count`` + 1, ``last_task_id``,
``claimed_at`` (Redis's clock) and ``token``; for a skip ``skips:<reason>`` + 1. The entry's
next time goes into the due set (``keys.BEAT_DUE_KEY``) in the same step.

The claim comes first and the send second, and a claimed run is also written to the pending
hash (``keys.BEAT_PENDING_KEY``), which the beat clears once the message is published
(``ack_pending``). A beat killed between the two leaves its run pending, and whichever beat
takes the lock next publishes it (``pending_runs``) under the same task id: a run is never
dropped, and is sent twice only if the beat died in the one round trip between publishing and
clearing, with the same task id both times. State lives in Redis, not in a file of the
container, so a beat on a new container knows when each entry last ran (``entry_state``).

The token check is equality, not "at least": after a Redis restart without persistence the
counter starts again at 1, and a stale beat still holding token 5 must not out-rank the new
holder of token 1.

Why not celery-redbeat: it saved an entry's ``last_run_at`` after the send, or not at all on
some paths (redbeat #111, #130), so a beat restarted between the send and the save sent the run
again; here the record and the check are the same script and precede the send. Its entries'
state was guarded only by its lock, whose renewal did not check the owner (#127) and which a
beat could have lost without noticing (#306, #230, #214), so two beats could both send a due
run; here the fencing token refuses every beat but the lock's current holder, per claim. And a
Redis restarted without persistence erased redbeat's schedule definitions with the state
(#224); here Redis holds only the per-entry run state, the entries themselves stay declared in
code, so a lost hash means "never ran" for the misfire policy to decide, never a lost entry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypedDict, cast

import redis

from personal_assistant.workers import keys
from personal_assistant.workers.schedulers.beat_lock import BEAT_LOCK_KEY

BEAT_ENTRY_PREFIX: Final = keys.BEAT_ENTRY_PREFIX
BEAT_DUE_KEY: Final = keys.BEAT_DUE_KEY
BEAT_PENDING_KEY: Final = keys.BEAT_PENDING_KEY

# KEYS[1]: the beat lock; KEYS[2]: the due set; KEYS[3]: the pending hash; KEYS[4..]: one
# entry hash per decision. ARGV[1]: the caller's fencing token; then 7 per decision: entry name,
# due, next due, next score (next due + jitter), outcome ('run' or a skip reason), task id,
# missed (times collapsed into this one). Times are passed as the client's repr and stored as
# given (Lua's number format keeps only 14 digits). Returns one 1/0 per decision, then the due
# set's soonest score after the claims ('' when empty), so beat knows how long to sleep.
_CLAIM_SCRIPT: Final = """
local lock = redis.call('GET', KEYS[1])
local results = {}
local current = lock and string.match(lock, '^(%d+):') == ARGV[1]
local clock = redis.call('TIME')
local now = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
for i = 4, #KEYS do
    local base = 2 + (i - 4) * 7
    local name, due, next_due, score = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
    local outcome, task_id, missed = ARGV[base + 4], ARGV[base + 5], tonumber(ARGV[base + 6])
    local last = redis.call('HGET', KEYS[i], 'last_due')
    if not current then
        results[#results + 1] = 0
    elseif last and tonumber(last) >= tonumber(due) then
        -- Decided before (a due set re-planned behind its run state): move on, send nothing.
        if tonumber(last) < tonumber(next_due) then
            redis.call('ZADD', KEYS[2], score, name)
            redis.call('HSET', KEYS[i], 'next_due', next_due)
        end
        results[#results + 1] = 0
    else
        redis.call('HSET', KEYS[i], 'last_due', due, 'next_due', next_due)
        redis.call('ZADD', KEYS[2], score, name)
        if missed > 0 then
            redis.call('HINCRBY', KEYS[i], 'skips:missed', missed)
        end
        if outcome == 'run' then
            redis.call('HSET', KEYS[i], 'last_run', due, 'token', ARGV[1], 'claimed_at', now,
                'last_task_id', task_id)
            redis.call('HINCRBY', KEYS[i], 'run_count', 1)
            redis.call('HSET', KEYS[3], task_id, cjson.encode({entry = name, due = due}))
        else
            redis.call('HINCRBY', KEYS[i], 'skips:' .. outcome, 1)
            redis.call('HSET', KEYS[i], 'last_skip', outcome, 'last_skip_due', due)
        end
        results[#results + 1] = 1
    end
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
results[#results + 1] = first[2] or ''
return results
"""

# The fields of one decision in the claim script's ARGV.
_FIELDS_PER_DECISION: Final = 7


@dataclass(frozen=True)
class Decision:
    """What the beat decided for one entry's time: run it (``outcome == "run"``) or skip it
    (``outcome`` is the reason), then wait for ``next_due`` (sent at ``next_score``)."""

    entry: str
    due: float
    next_due: float
    next_score: float
    outcome: str
    task_id: str = ""
    missed: int = 0


class EntryState(TypedDict):
    """What Redis remembers of one beat entry's runs (None/0 when it never ran)."""

    last_run: float | None  # the due time of the last claimed run, Unix seconds
    run_count: int
    claimed_at: float | None  # when that claim was made, by Redis's clock


def entry_key(entry: str) -> str:
    """The hash holding the run state of beat entry ``entry``."""
    if not entry:
        raise ValueError("beat entry name must not be empty")
    return f"{BEAT_ENTRY_PREFIX}{entry}"


def _check(decision: Decision, token: int) -> None:
    entry_key(decision.entry)
    for label, value in (("due_at", decision.due), ("next due", decision.next_due)):
        if not math.isfinite(value):
            raise ValueError(f"beat claim: {label} must be a finite Unix time, got {value}")
    if isinstance(token, bool) or token <= 0:
        raise ValueError(f"beat claim: token must be a positive fencing token, got {token!r}")
    if decision.outcome == "run" and not decision.task_id:
        raise ValueError("beat claim: a run needs its task id")


def claim_runs(
    client: redis.Redis,
    decisions: Sequence[Decision],
    *,
    token: int,
    lock_key: str = BEAT_LOCK_KEY,
) -> list[bool]:
    """Record ``decisions`` in one atomic step for the lock holder with fencing ``token``.

    One flag per decision: True when it was recorded (a run: the caller now publishes it, then
    calls :func:`ack_pending`), False when refused (a stale or missing lock, or this entry's
    time, or a later one, already decided). One round trip whatever the number of decisions.
    """
    return claim_runs_and_soonest(client, decisions, token=token, lock_key=lock_key)[0]


def claim_runs_and_soonest(
    client: redis.Redis,
    decisions: Sequence[Decision],
    *,
    token: int,
    lock_key: str = BEAT_LOCK_KEY,
) -> tuple[list[bool], float | None]:
    """:func:`claim_runs`, and the due set's soonest score once they are recorded (None when
    the set is empty or nothing was asked)."""
    if not decisions:
        return [], None
    args: list[str] = [str(token)]
    for decision in decisions:
        _check(decision, token)
        args += [
            decision.entry,
            repr(float(decision.due)),
            repr(float(decision.next_due)),
            repr(float(decision.next_score)),
            decision.outcome,
            decision.task_id,
            str(decision.missed),
        ]
    script = client.register_script(_CLAIM_SCRIPT)
    keys_ = [lock_key, BEAT_DUE_KEY, BEAT_PENDING_KEY] + [entry_key(d.entry) for d in decisions]
    reply = cast(list[int | bytes | str], script(keys=keys_, args=args))
    soonest = reply[-1]
    text = soonest.decode() if isinstance(soonest, bytes) else str(soonest)
    return [int(flag) == 1 for flag in reply[:-1]], float(text) if text else None


def claim_run(
    client: redis.Redis,
    *,
    entry: str,
    due_at: float,
    token: int,
    lock_key: str = BEAT_LOCK_KEY,
    next_due: float | None = None,
    task_id: str = "-",
) -> bool:
    """Claim the run of ``entry`` due at ``due_at`` for the lock holder with fencing ``token``.

    True exactly once per (entry, due time) and only while ``token`` is the lock's current
    one: the caller then sends the run. False means do not send (a stale or missing lock, or a
    run at or before this due time already claimed).
    """
    following = due_at if next_due is None else next_due
    decision = Decision(entry, due_at, following, following, "run", task_id)
    return claim_runs(client, [decision], token=token, lock_key=lock_key)[0]


def record_manual_run(client: redis.Redis, entry: str, task_id: str) -> None:
    """Note a run sent by hand (``schedule run-now``) as the entry's latest, so ``no_overlap``
    waits for it too; its times and run count are the schedule's and stay as they are."""
    seconds, micros = client.time()
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(
            entry_key(entry),
            mapping={"last_task_id": task_id, "claimed_at": f"{seconds}.{micros:06d}"},
        )
        pipe.hincrby(entry_key(entry), "manual_runs", 1)
        pipe.execute()


def ack_pending(client: redis.Redis | redis.client.Pipeline, task_ids: Sequence[str]) -> None:
    """Forget the pending records of runs that are now published."""
    if task_ids:
        client.hdel(BEAT_PENDING_KEY, *task_ids)


def pending_runs(client: redis.Redis) -> dict[str, tuple[str, float]]:
    """Runs claimed but not known to be published: task id -> (entry, due time)."""
    raw: dict[bytes | str, bytes | str] = client.hgetall(BEAT_PENDING_KEY)
    runs: dict[str, tuple[str, float]] = {}
    for task_id, value in raw.items():
        record = json.loads(value)
        runs[_text(task_id) or ""] = (str(record["entry"]), float(record["due"]))
    return runs


def _text(value: bytes | str | None) -> str | None:
    """A hash field as text, whichever ``decode_responses`` the client was made with."""
    return value.decode() if isinstance(value, bytes) else value


def entry_state(client: redis.Redis, entry: str) -> EntryState:
    """The recorded run state of ``entry`` (for a restarting beat and for exports)."""
    fields: list[bytes | str | None] = client.hmget(
        entry_key(entry), ["last_run", "run_count", "claimed_at"]
    )
    last_run, run_count, claimed_at = (_text(value) for value in fields)
    return EntryState(
        last_run=None if last_run is None else float(last_run),
        run_count=0 if run_count is None else int(run_count),
        claimed_at=None if claimed_at is None else float(claimed_at),
    )
