"""Commit one workflow transition atomically: a compare-and-set Lua script, one round trip.

A transition reads the task hashes it needs (each carries a version, field ``v``), decides in
Python (the same :class:`DependencyScheduler` the in-memory API uses) and then commits with
this script. The script checks that every task it read still has the version it read, and only
then writes the changed fields (bumping their versions), pushes the ready tasks' messages and
moves the workflow's counters. Redis runs a script alone, so the check and the writes are one
atomic step: when two upstreams end at once on two workers and share a dependent, both read it,
one commit wins, the other sees a changed version, reads again and finds the dependent already
``queued``. That is optimistic concurrency control with validation of the whole read set.

Why a script rather than WATCH/MULTI/EXEC: the transaction costs a WATCH round trip and the
heavier transactional pipeline on every hop, while the script validates and writes in the one
round trip the writes needed anyway; the read round trip is the same in both.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import Any, cast

import redis

# Commands the broker's publish may ask for (kombu's Redis channel: lpush, pexpire on queues
# with an expiry, publish for fanout). Anything else is refused before it reaches the script.
ALLOWED_PUBLISH_COMMANDS = frozenset({"lpush", "pexpire", "publish"})

# The task hashes' version field is ``v`` (store.VERSION_FIELD); a check marked strict fails
# when the field is missing (rows a submit wrote before versions were stored). The script touches
# keys it is not passed in KEYS: fine on the single Redis that kombu's transport requires too.
_SCRIPT = """
local req = cjson.decode(ARGV[1])
for _, c in ipairs(req.check) do
  local v = redis.call('HGET', c[1], 'v')
  if v == false then
    if c[3] == 1 then return false end
    v = '0'
  end
  if v ~= c[2] then return false end
end
for _, w in ipairs(req.write) do
  redis.call('HSET', unpack(w))
  redis.call('HINCRBY', w[1], 'v', 1)
end
for _, op in ipairs(req.ops) do
  redis.call(unpack(op))
end
if req.final > 0 then
  return {redis.call('HINCRBY', req.meta, 'remaining', -req.final),
          redis.call('HINCRBY', req.meta, 'failed_leaves', req.failed)}
end
return {}
"""


class ConflictError(Exception):
    """A task read by the transition changed before its commit: read again and decide again."""


@dataclass
class Commit:
    """What one transition writes, and the versions of what it read."""

    meta_key: str
    checks: list[tuple[str, str]] = field(default_factory=list)
    #: Keys of ``checks`` whose version field must exist: rows taken as submitted, unread.
    strict: frozenset[str] = frozenset()
    writes: dict[str, dict[str, str]] = field(default_factory=dict)
    publishes: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    final: int = 0
    failed_leaves: int = 0

    def request(self) -> str:
        """The script's argument: one JSON document (every value a string, as Redis stores it)."""
        for name, _ in self.publishes:
            if name not in ALLOWED_PUBLISH_COMMANDS:
                raise ValueError(f"refusing to commit a {name!r} command with a transition")
        return json.dumps(
            {
                "check": [[key, version, int(key in self.strict)] for key, version in self.checks],
                "write": [
                    [key, *(part for item in fields.items() for part in item)]
                    for key, fields in self.writes.items()
                    if fields
                ],
                "ops": [[name, *(_as_text(a) for a in args)] for name, args in self.publishes],
                "meta": self.meta_key,
                "final": self.final,
                "failed": self.failed_leaves,
            }
        )


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


# One registered Script per client (it sends EVALSHA and reloads itself after NOSCRIPT); weak
# keys, so a client that is closed and dropped takes its entry with it.
_scripts: weakref.WeakKeyDictionary[redis.Redis, Any] = weakref.WeakKeyDictionary()


def _script(client: redis.Redis) -> Any:
    script = _scripts.get(client)
    if script is None:
        script = _scripts[client] = client.register_script(_SCRIPT)
    return script


def commit(client: redis.Redis, change: Commit) -> tuple[int, int] | None:
    """Apply ``change`` if nothing it read has changed.

    Returns the workflow's counters after the change (remaining, failed leaves) when it made
    tasks final, None when it made none final. Raises :class:`ConflictError` when a task it
    read was changed by someone else in the meantime (nothing is written then).
    """
    reply = _script(client)(keys=[], args=[change.request()], client=client)
    if reply is None:
        raise ConflictError(change.meta_key)
    counters = cast(list[int], reply)
    if not counters:
        return None
    return int(counters[0]), int(counters[1])
