"""The beat's view of Redis each tick, in one round trip; and the re-planning of its entries.

:func:`read_tick` runs one script that holds the lock (renews it, or takes it when free: the
acquire and renew of beat_lock.BeatLock, same value and semantics, inlined so that the tick is
one round trip; beat_lock.py says why the value carries a fencing token), records beat's
liveness, reads the entries' version counter, and, for the holder, returns the entries due by
``now`` (with their nominal due times) and the soonest time after. An idle beat thus costs
one round trip per tick, whatever the number of entries; celery-redbeat spends two (its lock
extension and its ZRANGEBYSCORE) and more per due entry.

:func:`sync_entries` is the holder's re-plan, run when it takes the lock and whenever the
version changes: an entry not in the due set (new, enabled again, or lost with a Redis that
restarted empty) gets its first time; an entry whose timing changed (its fingerprint) is
re-planned from now; an entry no longer enabled leaves the due set. Its run state stays, so an
entry that comes back knows when it last ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, cast

import redis

from personal_assistant.workers import keys
from personal_assistant.workers.schedulers.beat_lock import BeatLock
from personal_assistant.workers.schedulers.run_claims import entry_key

# KEYS: lock, fence, tick, version, due set. ARGV: owner, token ('' when not holding),
# timeout ms, now (the beat's clock), batch limit, the entry hashes' prefix.
# Returns {token (0: not holding), version, holder value or '', due rows (name, next_due,
# last_due, last_task_id, claimed_at), soonest score, 1 if the lock was taken by this call}.
_TICK_SCRIPT: Final = """
local value = redis.call('GET', KEYS[1])
local token = 0
local acquired = 0
if ARGV[2] ~= '' and value == ARGV[2] .. ':' .. ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    token = tonumber(ARGV[2])
elseif not value then
    token = redis.call('INCR', KEYS[2])
    value = token .. ':' .. ARGV[1]
    redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
    acquired = 1
end
redis.call('SET', KEYS[3], ARGV[4])
local version = redis.call('GET', KEYS[4]) or '0'
if token == 0 then
    return {0, version, value or '', {}, '', 0}
end
local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[4], 'LIMIT', 0, ARGV[5])
local rows = {}
for _, name in ipairs(due) do
    rows[#rows + 1] = name
    local state = redis.call('HMGET', ARGV[6] .. name, 'next_due', 'last_due', 'last_task_id',
        'claimed_at')
    for j = 1, 4 do
        rows[#rows + 1] = state[j] or ''
    end
end
local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
return {token, version, value, rows, first[2] or '', acquired}
"""

# KEYS: lock, due set. ARGV: token, then 4 per entry: name, fingerprint, first due, first score;
# last, the entry hashes' prefix.
# Entries not named are taken out of the due set. Returns how many entries were (re)planned.
_SYNC_SCRIPT: Final = """
local lock = redis.call('GET', KEYS[1])
if not lock or string.match(lock, '^(%d+):') ~= ARGV[1] then
    return -1
end
local keep = {}
local planned = 0
for i = 2, #ARGV - 1, 4 do
    local name, fp, due, score = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    keep[name] = true
    local hash = ARGV[#ARGV] .. name
    local known = redis.call('HGET', hash, 'fingerprint')
    if known ~= fp or not redis.call('ZSCORE', KEYS[2], name) then
        redis.call('ZADD', KEYS[2], score, name)
        redis.call('HSET', hash, 'fingerprint', fp, 'next_due', due)
        planned = planned + 1
    end
end
local members = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, name in ipairs(members) do
    if not keep[name] then
        redis.call('ZREM', KEYS[2], name)
    end
end
return planned
"""

# Fields per due row in the tick script's reply: name and the four hash fields.
_ROW_FIELDS: Final = 5
# Due entries handled per tick at most; the rest come in the next tick, at once (sleep 0).
DUE_BATCH: Final = 1_000


@dataclass(frozen=True)
class DueEntry:
    """An entry found due: its recorded next time, last decided time, and its last run's id
    and claim time (None or '' when unknown)."""

    name: str
    next_due: float | None
    last_due: float | None
    last_task_id: str = ""
    claimed_at: float | None = None


@dataclass(frozen=True)
class TickView:
    """One tick's reading: ``token`` is the fencing token held (0: another beat holds it);
    ``acquired`` is true when this tick took the lock (it was free, or Redis lost it)."""

    token: int
    version: str
    holder: str
    due: list[DueEntry] = field(default_factory=list)
    soonest: float | None = None
    acquired: bool = False


@dataclass(frozen=True)
class PlannedEntry:
    """An entry's first time, for :func:`sync_entries` (used only if it needs planning)."""

    name: str
    fingerprint: str
    first_due: float
    first_score: float


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _float(text: str) -> float | None:
    return float(text) if text else None


class BeatState:
    """The scripts of a beat on one Redis, registered once (each call is one EVALSHA)."""

    def __init__(self, client: redis.Redis, *, owner: str, timeout: float) -> None:
        self.client = client
        self.owner = owner
        self.timeout_ms = max(1, round(timeout * 1000))
        self._tick = client.register_script(_TICK_SCRIPT)
        self._sync = client.register_script(_SYNC_SCRIPT)

    def read_tick(self, *, token: int | None, now: float, limit: int = DUE_BATCH) -> TickView:
        """Hold the lock (renew ``token``'s, or take it if free), record the tick, and read
        what is due by ``now`` when holding."""
        raw = cast(
            list[object],
            self._tick(
                keys=[
                    keys.BEAT_LOCK_KEY,
                    keys.BEAT_FENCE_KEY,
                    keys.BEAT_TICK_KEY,
                    keys.BEAT_VERSION_KEY,
                    keys.BEAT_DUE_KEY,
                ],
                args=[
                    self.owner,
                    "" if token is None else str(token),
                    self.timeout_ms,
                    repr(float(now)),
                    limit,
                    keys.BEAT_ENTRY_PREFIX,
                ],
            ),
        )
        held, version, holder, rows, soonest, acquired = raw
        flat = [_text(cast(bytes | str, item)) for item in cast(list[object], rows)]
        due = [
            DueEntry(
                flat[i], _float(flat[i + 1]), _float(flat[i + 2]), flat[i + 3], _float(flat[i + 4])
            )
            for i in range(0, len(flat), _ROW_FIELDS)
        ]
        soonest_text = _text(cast(bytes | str, soonest))
        return TickView(
            token=int(cast(int, held)),
            version=_text(cast(bytes | str, version)),
            holder=_text(cast(bytes | str, holder)),
            due=due,
            soonest=float(soonest_text) if soonest_text else None,
            acquired=int(cast(int, acquired)) == 1,
        )

    def sync_entries(self, *, token: int, entries: Sequence[PlannedEntry]) -> int:
        """Plan the entries that need it and drop the others from the due set (see the module
        doc); -1 when ``token`` no longer holds the lock (nothing is changed then)."""
        args: list[str | int] = [str(token)]
        for entry in entries:
            args += [
                entry.name,
                entry.fingerprint,
                repr(float(entry.first_due)),
                repr(float(entry.first_score)),
            ]
        args.append(keys.BEAT_ENTRY_PREFIX)
        return int(cast(int, self._sync(keys=[keys.BEAT_LOCK_KEY, keys.BEAT_DUE_KEY], args=args)))

    def release(self, token: int) -> bool:
        """Give the lock up if ``token`` still holds it (a clean stop hands over at once)."""
        lock = BeatLock(self.client, owner=self.owner, timeout=self.timeout_ms / 1000)
        lock.token = token
        return lock.release()


__all__ = ["DUE_BATCH", "BeatState", "DueEntry", "PlannedEntry", "TickView", "entry_key"]
