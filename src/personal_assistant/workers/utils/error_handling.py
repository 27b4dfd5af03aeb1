"""Error taxonomy (retry or not) and the dead-letter queue operators list, replay and purge.

A task's final failure is written here with its name, args, exception and traceback. Entries
live in Redis: a hash of id -> JSON entry, ordered by a sorted set of failure times, bounded by
``dlq_max_entries`` (oldest dropped first, because Redis runs with ``noeviction``).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.config import is_redis_url


class TransientError(Exception):
    """A failure that may pass on its own (a timeout, a 503, a lost connection): retried."""


class PermanentError(Exception):
    """A failure retrying cannot fix (bad input, a 4xx, a missing object): dead-lettered at once."""


# Errors retried with backoff unless a task says otherwise. OSError covers socket errors and
# refused connections; its subclasses that describe the input (missing file, permission) are
# excluded in is_transient because retrying them only delays the dead letter.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
    OSError,
    redis.ConnectionError,
    redis.TimeoutError,
)
PERMANENT_OS_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is worth retrying."""
    if isinstance(exc, (PermanentError, *PERMANENT_OS_ERRORS)):
        return False
    return isinstance(exc, TRANSIENT_ERRORS)


def _clip(text: str, limit: int = c.DLQ_MAX_FIELD_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} chars cut]"


@dataclass
class DeadLetter:
    """One task that failed for good, with what it takes to understand and replay it."""

    task_name: str
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    exception_type: str
    exception: str
    traceback: str
    queue: str | None = None
    priority: int | None = None
    retries: int = 0
    hostname: str | None = None
    failed_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Set when the worker rejected the message before running it (broker/poison.py): why,
    #: and the message as received. Such an entry is never replayed (the message cannot run).
    reason: str | None = None
    raw: str | None = None

    @property
    def replayable(self) -> bool:
        """False for a rejected message: sending it again would be rejected again."""
        return self.reason is None

    def to_json(self) -> str:
        """Serialise as JSON (args that JSON cannot hold are stored as their repr)."""
        return json.dumps(asdict(self), default=repr)

    @classmethod
    def from_json(cls, raw: str | bytes) -> DeadLetter:
        """Rebuild an entry written by :meth:`to_json`."""
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class DeadLetterNotFound(KeyError):
    """No dead letter has that id (never existed, purged, or already replayed)."""


class NotReplayable(ValueError):
    """The dead letter is a message the worker rejected: it would be rejected again."""

    def __init__(self, letter: DeadLetter) -> None:
        super().__init__(
            f"dead letter {letter.id} is a rejected message ({letter.reason}), not a failed "
            "task: fix its producer and purge it"
        )
        self.letter = letter


# Add an entry and drop the oldest beyond the bound, in one step so concurrent failures on many
# workers never leave the index and the hash out of step.
_ADD_SCRIPT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
end
return excess
"""

# Take an entry out atomically: of two operators replaying one id, exactly one gets it.
_TAKE_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return raw
"""


class DeadLetterQueue:
    """The dead letters in one Redis database."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_entries: int = c.DLQ_MAX_ENTRIES,
        key: str = c.DLQ_KEY,
        index_key: str = c.DLQ_INDEX_KEY,
    ) -> None:
        self.client = client
        self.max_entries = max_entries
        self.key = key
        self.index_key = index_key
        self._add = client.register_script(_ADD_SCRIPT)
        self._take = client.register_script(_TAKE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, max_entries: int = c.DLQ_MAX_ENTRIES) -> DeadLetterQueue:
        """A queue on the Redis at ``url`` (the broker's, normally)."""
        if not is_redis_url(url):
            raise ValueError("the dead-letter queue needs a Redis URL (the broker or backend)")
        return cls(redis.Redis.from_url(url, socket_timeout=5), max_entries=max_entries)

    def add(self, letter: DeadLetter) -> str:
        """Store ``letter``; return its id."""
        letter.traceback = _clip(letter.traceback)
        letter.exception = _clip(letter.exception)
        if letter.raw is not None:
            letter.raw = _clip(letter.raw)
        self._add(
            keys=[self.key, self.index_key],
            args=[letter.id, letter.to_json(), letter.failed_at, self.max_entries],
        )
        return letter.id

    def __len__(self) -> int:
        return int(self.client.zcard(self.index_key))

    def list(self, limit: int = 50, *, newest_first: bool = True) -> list[DeadLetter]:
        """Up to ``limit`` entries, newest first by default."""
        ids = (self.client.zrevrange if newest_first else self.client.zrange)(
            self.index_key, 0, max(limit, 1) - 1
        )
        if not ids:
            return []
        raws = self.client.hmget(self.key, cast("list[bytes]", ids))
        return [DeadLetter.from_json(raw) for raw in raws if raw is not None]

    def get(self, letter_id: str) -> DeadLetter:
        """The entry with this id, or DeadLetterNotFound."""
        raw = self.client.hget(self.key, letter_id)
        if raw is None:
            raise DeadLetterNotFound(letter_id)
        return DeadLetter.from_json(raw)

    def replay(self, letter_id: str, app: Any) -> str:
        """Send the task again as first sent; the entry leaves the queue. Returns the new task id.

        The entry is taken out before publishing (so two replays cannot both send it) and put back
        if publishing fails, so a broker outage loses nothing.
        """
        raw = self._take(keys=[self.key, self.index_key], args=[letter_id])
        if raw is None:
            raise DeadLetterNotFound(letter_id)
        letter = DeadLetter.from_json(raw)
        if not letter.replayable:
            self.add(letter)
            raise NotReplayable(letter)
        options: dict[str, Any] = {}
        if letter.queue:
            options["queue"] = letter.queue
        if letter.priority is not None:
            options["priority"] = letter.priority
        try:
            result = app.send_task(
                letter.task_name,
                args=letter.args,
                kwargs=letter.kwargs,
                headers={"dlq_replay_of": letter.id},
                **options,
            )
        except Exception:
            self.add(letter)
            raise
        return str(result.id)

    def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete the given entries, or all of them; return how many were removed."""
        if ids is None:
            count = len(self)
            self.client.delete(self.key, self.index_key)
            return count
        if not ids:
            return 0
        with self.client.pipeline() as pipe:
            pipe.hdel(self.key, *ids)
            pipe.zrem(self.index_key, *ids)
            removed, _ = pipe.execute()
        return int(removed)
