"""Who holds which message: the Redis side of the reliable fetch (handed a client, no kombu).

Every fetched message has an entry in kombu's ``unacked`` hash (its bytes, exchange and routing
key) and ``unacked_index`` (its delivery time, for the visibility timeout), as kombu writes
them, plus an *owner*: the consumer that fetched it and a per-delivery nonce. Consumers (one per
channel, so one per broker connection) record a heartbeat in a sorted set scored by Redis's
clock. When a consumer falls silent for ``dead_after`` seconds (a SIGKILLed worker, a lost
host), any other consumer puts its messages back on their queues: after about half a minute,
instead of kombu's visibility timeout (72 minutes with this project's defaults).

Every move checks the owner and nonce it read (scripts.py), so a message is restored once
however many workers reclaim it, and a late ack never removes another consumer's copy.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import redis

from personal_assistant.workers import keys as keyspace
from personal_assistant.workers.broker import scripts

# keys.broker_wake_key, under the name tests and older callers import it by.
wake_key = keyspace.broker_wake_key
# A wake list a restore pushes to expires this long after its last token: its consumers delete
# it when they find the queue empty, and a queue nobody fetches from would otherwise keep it. A
# blocked consumer takes a token within milliseconds, and one that misses a token fetches after
# a second anyway.
WAKE_TTL_MS: Final = 10_000


def new_consumer_id() -> str:
    """A consumer id, unique per channel: host-independent, readable in ``redis-cli``."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def owner_id(owner: str | bytes) -> str:
    """The consumer id part of an owner value."""
    text = owner.decode() if isinstance(owner, bytes) else owner
    return text.split(" ", 1)[0]


@dataclass(frozen=True)
class CustodyKeys:
    """The keys a channel's custody uses (kombu's names are transport options; the defaults
    are kombu's defaults)."""

    unacked: str = keyspace.KOMBU_UNACKED_KEY
    index: str = keyspace.KOMBU_UNACKED_INDEX_KEY
    owner: str = keyspace.BROKER_OWNER_KEY
    consumers: str = keyspace.BROKER_CONSUMERS_KEY


@dataclass(frozen=True)
class Orphan:
    """A message held by a dead consumer: its tag, owner value and ``unacked`` entry."""

    tag: str
    owner: str
    entry: bytes


class _Script:
    """A Lua script sent by SHA, loaded again after Redis forgot it (a restart, SCRIPT FLUSH)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.text)
            return client.evalsha(self.sha, len(keys), *keys, *args)


FETCH = _Script(scripts.FETCH)
ACK = _Script(scripts.ACK)
MOVE = _Script(scripts.MOVE)
ORPHANS = _Script(scripts.ORPHANS)
BEAT = _Script(scripts.BEAT)


def fetch_command(
    keys: CustodyKeys,
    lists: Sequence[str],
    queues: Sequence[str],
    *,
    now: float,
    consumer: str,
    max_bytes: int,
    keep_bytes: int,
) -> tuple[Any, ...]:
    """The EVALSHA command of one fetch, ready to send on the consumer's own connection."""
    all_keys = [
        keys.unacked,
        keys.index,
        keys.owner,
        keys.consumers,
        *lists,
        *(keyspace.broker_wake_key(q) for q in queues),
    ]
    args = [repr(now), consumer, max_bytes, keep_bytes, len(queues), *queues]
    return ("EVALSHA", FETCH.sha, len(all_keys), *all_keys, *args)


def fetch(client: redis.Redis, command: tuple[Any, ...]) -> Any:
    """Run a fetch built by :func:`fetch_command` synchronously (``basic_get``)."""
    numkeys = int(command[2])
    keys, args = command[3 : 3 + numkeys], command[3 + numkeys :]
    return FETCH(client, keys, args)


def ack(client: redis.Redis, keys: CustodyKeys, tag: str, consumer: str) -> bool:
    """Remove ``tag`` from custody if ``consumer`` still owns it; False when it did not."""
    return bool(ACK(client, [keys.unacked, keys.index, keys.owner], [tag, consumer]))


def ack_command(keys: CustodyKeys, tag: str, consumer: str) -> tuple[Any, ...]:
    """The EVALSHA command of :func:`ack`, to send in one write with a fetch."""
    return ("EVALSHA", ACK.sha, 3, keys.unacked, keys.index, keys.owner, tag, consumer)


def ack_many(client: redis.Redis, keys: CustodyKeys, tags: Sequence[str], consumer: str) -> int:
    """:func:`ack` for each tag, in one round trip; returns how many this consumer still owned."""
    if not tags:
        return 0
    try:
        return _ack_pipeline(client, keys, tags, consumer)
    except redis.exceptions.NoScriptError:
        # Redis forgot the script (a restart, SCRIPT FLUSH): acks are idempotent, send again.
        client.script_load(ACK.text)
        return _ack_pipeline(client, keys, tags, consumer)


def _ack_pipeline(
    client: redis.Redis, keys: CustodyKeys, tags: Sequence[str], consumer: str
) -> int:
    with client.pipeline(transaction=False) as pipe:
        for tag in tags:
            pipe.evalsha(ACK.sha, 3, keys.unacked, keys.index, keys.owner, tag, consumer)
        return sum(bool(done) for done in pipe.execute())


def read_entry(client: redis.Redis, keys: CustodyKeys, tag: str) -> tuple[bytes | None, str]:
    """The ``unacked`` entry of ``tag`` and its owner value ('' when it has none)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hget(keys.unacked, tag)
        pipe.hget(keys.owner, tag)
        entry, owner = pipe.execute()
    return cast("bytes | None", entry), (owner.decode() if owner else "")


def move(
    client: redis.Redis,
    keys: CustodyKeys,
    tag: str,
    *,
    owner: str,
    entry: bytes,
    payload: bytes | str,
    destinations: Sequence[tuple[str, str]],
    leftmost: bool,
) -> bool:
    """Push ``payload`` to each (list, wake list) and drop ``tag`` from custody, if the entry is
    still as read (``owner`` and, for an entry without one, its bytes). True when moved."""
    script_keys = [
        keys.unacked,
        keys.index,
        keys.owner,
        *(lst for lst, _ in destinations),
        *(wake for _, wake in destinations),
    ]
    args = [tag, owner, b"" if owner else entry, payload, "l" if leftmost else "r", WAKE_TTL_MS]
    return bool(MOVE(client, script_keys, args))


def orphans(
    client: redis.Redis, keys: CustodyKeys, dead_after: float, abandoned: Iterable[str] = ()
) -> tuple[list[str], list[Orphan]]:
    """Consumers silent for ``dead_after`` seconds (plus ``abandoned`` ones), and the messages
    they still hold."""
    ids, found = ORPHANS(
        client, [keys.consumers, keys.owner, keys.unacked], [dead_after, *abandoned]
    )
    dead = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
    held = [
        Orphan(_text(found[i]), _text(found[i + 1]), bytes(found[i + 2]))
        for i in range(0, len(found), 3)
    ]
    return dead, held


def forget(client: redis.Redis, keys: CustodyKeys, consumers: Sequence[str]) -> None:
    """Drop consumers from the heartbeat set (their messages were put back)."""
    if consumers:
        client.zrem(keys.consumers, *consumers)


def beat(client: redis.Redis, keys: CustodyKeys, consumers: Sequence[str]) -> None:
    """Record that these consumers are alive now (by Redis's clock)."""
    if consumers:
        BEAT(client, [keys.consumers], list(consumers))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
