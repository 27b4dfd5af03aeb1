"""The run claim: each (beat entry, due time) is sent at most once, by the lock's current holder.

Before a beat sends an entry's run it claims it with ``claim_run``: one Lua script that checks,
in the same atomic step,

(a) that the beat lock (``beat_lock``) carries the caller's fencing token, so a beat that paused
    past its lock timeout, or never held the lock, cannot send; and
(b) that the entry's recorded last due time is older than this due time, so a run already
    claimed (by this beat before a restart, or by another beat) is not claimed again,

and then records the run in the entry's hash: ``last_run`` (the due time), ``run_count`` + 1,
``claimed_at`` (Redis's clock) and ``token``. The claim comes first and the send second: a
beat that dies between the two loses that one run (at most once) rather than sending it twice
after a restart. State lives in Redis, not in a file of the container, so a beat on a new
container knows when each entry last ran (``entry_state``).

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

import math
from typing import Final, TypedDict, cast

import redis

from personal_assistant.workers import keys
from personal_assistant.workers.schedulers.beat_lock import BEAT_LOCK_KEY

BEAT_ENTRY_PREFIX: Final = keys.BEAT_ENTRY_PREFIX

# KEYS[1]: the beat lock; KEYS[2]: the entry's hash.
# ARGV[1]: the caller's fencing token (decimal); ARGV[2]: the due time (Unix seconds, as the
# client's repr: stored as given, since Lua's number format keeps only 14 digits).
# Returns 1 when claimed (and recorded), 0 when refused.
_CLAIM_SCRIPT: Final = """
local lock = redis.call('GET', KEYS[1])
if not lock or string.match(lock, '^(%d+):') ~= ARGV[1] then
    return 0
end
local last = redis.call('HGET', KEYS[2], 'last_run')
if last and tonumber(last) >= tonumber(ARGV[2]) then
    return 0
end
local clock = redis.call('TIME')
redis.call('HSET', KEYS[2], 'last_run', ARGV[2], 'token', ARGV[1],
    'claimed_at', clock[1] .. '.' .. string.format('%06d', tonumber(clock[2])))
redis.call('HINCRBY', KEYS[2], 'run_count', 1)
return 1
"""


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


def claim_run(
    client: redis.Redis,
    *,
    entry: str,
    due_at: float,
    token: int,
    lock_key: str = BEAT_LOCK_KEY,
) -> bool:
    """Claim the run of ``entry`` due at ``due_at`` for the lock holder with fencing ``token``.

    True exactly once per (entry, due time) and only while ``token`` is the lock's current
    one: the caller then sends the run. False means do not send (a stale or missing lock, or a
    run at or before this due time already claimed).
    """
    if not math.isfinite(due_at):
        raise ValueError(f"beat claim: due_at must be a finite Unix time, got {due_at}")
    if isinstance(token, bool) or token <= 0:
        raise ValueError(f"beat claim: token must be a positive fencing token, got {token!r}")
    script = client.register_script(_CLAIM_SCRIPT)
    claimed = script(keys=[lock_key, entry_key(entry)], args=[str(token), repr(float(due_at))])
    return int(cast(int, claimed)) == 1


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
