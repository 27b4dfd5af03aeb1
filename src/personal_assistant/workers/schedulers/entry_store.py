"""Beat entries changed at run time: added, removed, disabled and enabled, kept in Redis.

Entries declared in code (the domain schedulers) are the base; Redis holds only what operators
changed (``celery ... schedule add|remove|disable|enable``): the added entries as the JSON of
:meth:`BeatEntry.to_data` (``keys.BEAT_DEFS_KEY``) and the names of disabled entries
(``keys.BEAT_DISABLED_KEY``). Every change bumps ``keys.BEAT_VERSION_KEY`` in the same
transaction, and every running beat compares that counter each tick (it is in the tick script),
so a change reaches the active beat within one tick, without a restart.

A Redis that lost its data loses these changes, not the declared entries: redbeat kept its
whole schedule in Redis and lost it with the data (redbeat #224).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import redis

from personal_assistant.workers import keys
from personal_assistant.workers.schedulers.beat_entry import BeatEntry, EntryError, entry_from_data


class EntryStore:
    """The run-time changes to the beat schedule, in one Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def version(self) -> str:
        """The change counter ('0' when nothing was ever changed)."""
        value: bytes | str | None = self.client.get(keys.BEAT_VERSION_KEY)
        return "0" if value is None else _text(value)

    def add(self, entry: BeatEntry, *, replace: bool = False) -> bool:
        """Store an added entry; True if it replaced one of the same name. An existing name
        is refused unless ``replace`` (the caller checks names declared in code)."""
        data = json.dumps(entry.to_data(), sort_keys=True)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(keys.BEAT_DEFS_KEY)  # type: ignore[no-untyped-call]
                    existed = bool(pipe.hexists(keys.BEAT_DEFS_KEY, entry.name))
                    if existed and not replace:
                        raise EntryError(
                            entry.name, "an added entry has this name (use --replace to change it)"
                        )
                    pipe.multi()
                    pipe.hset(keys.BEAT_DEFS_KEY, entry.name, data)
                    if not entry.enabled:
                        pipe.sadd(keys.BEAT_DISABLED_KEY, entry.name)
                    else:
                        pipe.srem(keys.BEAT_DISABLED_KEY, entry.name)
                    pipe.incr(keys.BEAT_VERSION_KEY)
                    pipe.execute()
                    return existed
                except redis.WatchError:
                    continue

    def remove(self, name: str) -> bool:
        """Forget an added entry (its run state stays, for the record); False if none."""
        if not self.client.hexists(keys.BEAT_DEFS_KEY, name):
            return False  # nothing changes: no reload of every beat for it
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.BEAT_DEFS_KEY, name)
            pipe.srem(keys.BEAT_DISABLED_KEY, name)
            pipe.incr(keys.BEAT_VERSION_KEY)
            removed, _, _ = pipe.execute()
        return bool(removed)

    def set_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or disable ``name`` (declared or added); True if that changed anything."""
        if self.client.sismember(keys.BEAT_DISABLED_KEY, name) != enabled:
            return False  # already so: no reload of every beat for it
        with self.client.pipeline(transaction=True) as pipe:
            if enabled:
                pipe.srem(keys.BEAT_DISABLED_KEY, name)
            else:
                pipe.sadd(keys.BEAT_DISABLED_KEY, name)
            pipe.incr(keys.BEAT_VERSION_KEY)
            changed, _ = pipe.execute()
        return bool(changed)

    def disabled(self) -> set[str]:
        """Names of the disabled entries."""
        members: set[bytes | str] = self.client.smembers(keys.BEAT_DISABLED_KEY)
        return {_text(member) for member in members}

    def added(self) -> tuple[dict[str, BeatEntry], dict[str, str]]:
        """The added entries, and the problems of stored ones that no longer check (a name ->
        message: a task renamed since, for instance); those are reported and not run."""
        raw = cast("Mapping[bytes | str, bytes | str]", self.client.hgetall(keys.BEAT_DEFS_KEY))
        entries: dict[str, BeatEntry] = {}
        problems: dict[str, str] = {}
        for key, value in raw.items():
            name = _text(key)
            try:
                data: Any = json.loads(value)
                entries[name] = entry_from_data(name, data)
            except (ValueError, TypeError) as exc:
                problems[name] = str(exc)
        return entries, problems


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
