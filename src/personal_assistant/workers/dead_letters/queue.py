"""The dead-letter queue operators list, replay and purge.

A task's final failure is written here with its name, args, exception and traceback. Entries
live in Redis: a hash of id -> JSON entry, ordered by a sorted set of failure times, bounded by
``dlq_max_entries`` (oldest dropped first, because Redis runs with ``noeviction``).

An entry is input like any other (whoever can write to Redis can write one), so it is parsed
and checked (checks.py) before anything acts on it: ``list`` skips and reports an
entry it cannot read, never failing for all; ``replay`` refuses an unreadable entry, or one
naming a task, queue or priority this deployment does not run, and leaves it in place; and it
takes an entry out only while it is still exactly the bytes that were checked.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, cast

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys, redis_clients
from personal_assistant.workers.bounded_yaml import short_repr
from personal_assistant.workers.config import is_redis_url
from personal_assistant.workers.dead_letters.checks import (
    DLQ_MAX_ENTRY_BYTES,
    parse_entry,
    replay_problems,
    stored_priority,
)


def _clip(text: str, limit: int = c.DLQ_MAX_FIELD_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} chars cut]"


# Ids are printed in one-line messages; a tampered one may hold control characters or megabytes.
ID_SHOWN_CHARS: Final = 80


def shown_id(letter_id: str) -> str:
    """``letter_id`` fit for a one-line message: as is when plain, else quoted and cut."""
    if letter_id and letter_id.isprintable() and len(letter_id) <= ID_SHOWN_CHARS:
        return letter_id
    return short_repr(letter_id, ID_SHOWN_CHARS)


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
    def from_json(cls, raw: str | bytes, *, letter_id: str | None = None) -> DeadLetter:
        """Rebuild an entry written by :meth:`to_json`, once every field checks out.

        ``letter_id`` is the key the entry is stored under (its id when the entry has none).
        Raises UnreadableDeadLetter saying why when ``raw`` is not such an entry. Fields a newer
        version added are ignored.
        """
        try:
            data = parse_entry(raw, letter_id)
        except ValueError as exc:
            raise UnreadableDeadLetter(letter_id or "(no id)", str(exc)) from None
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if letter_id is not None:
            fields.setdefault("id", letter_id)
        fields["failed_at"] = float(fields["failed_at"])
        return cls(**fields)


class DeadLetterNotFound(KeyError):
    """No dead letter has that id (never existed, purged, or already replayed)."""


class UnreadableDeadLetter(ValueError):
    """The entry under an id is not a dead letter we can trust (not JSON, a field missing or of
    the wrong type): it is never acted on, only shown raw and purged."""

    def __init__(self, letter_id: str, reason: str) -> None:
        super().__init__(f"dead letter {shown_id(letter_id)} is unreadable: {reason}")
        self.letter_id = letter_id
        self.reason = reason


class NotReplayable(ValueError):
    """The dead letter is a message the worker rejected: it would be rejected again."""

    def __init__(self, letter: DeadLetter) -> None:
        super().__init__(
            f"dead letter {letter.id} is a rejected message ({letter.reason}), not a failed "
            "task: fix its producer and purge it"
        )
        self.letter = letter


class ReplayRefused(ValueError):
    """The dead letter names a task, queue or priority this deployment does not run."""

    def __init__(self, letter: DeadLetter, problems: Sequence[str]) -> None:
        super().__init__(f"dead letter {shown_id(letter.id)} not replayed: {'; '.join(problems)}")
        self.letter = letter
        self.problems = list(problems)


class DeadLetterChanged(RuntimeError):
    """The entry changed between its check and its removal: nothing was sent."""

    def __init__(self, letter_id: str) -> None:
        super().__init__(
            f"dead letter {shown_id(letter_id)} changed while it was being replayed; nothing "
            "was sent: replay it again"
        )
        self.letter_id = letter_id


@dataclass(frozen=True)
class UnreadableEntry:
    """An entry ``scan`` skipped: its id and why it cannot be read."""

    id: str
    reason: str


@dataclass(frozen=True)
class Listing:
    """A page of the queue: the entries that read as dead letters, and those that do not."""

    letters: list[DeadLetter]
    unreadable: list[UnreadableEntry]


@dataclass(frozen=True)
class RawEntry:
    """An entry as stored, for ``dlq show`` of one that does not read: its size and first bytes."""

    size: int
    text: str


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

# Each entry's size (-1: absent) and its bytes; of an entry over the cap ARGV[1] only its first
# ARGV[2] bytes, so an oversized (tampered) value never travels whole. HSTRLEN first because
# HGET copies the value.
_READ_SCRIPT = """
local cap, peek = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local size = redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if size == 0 and redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then size = -1 end
  local raw = ''
  if size > cap then
    if peek > 0 then raw = string.sub(redis.call('HGET', KEYS[1], ARGV[i]), 1, peek) end
  elseif size > 0 then
    raw = redis.call('HGET', KEYS[1], ARGV[i])
  end
  out[#out + 1] = size
  out[#out + 1] = raw
end
return out
"""

# Take an entry out only if it is still exactly the bytes the caller checked: of two operators
# replaying one id exactly one gets it (1), the other finds it gone (0); an entry rewritten
# after its check is left in place (-1).
_TAKE_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if raw ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def _as_bytes(value: bytes | str) -> bytes:
    # A client made with decode_responses=True hands back str.
    return value.encode() if isinstance(value, str) else bytes(value)


def _as_text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "backslashreplace")


def _task_registry(app: Any, name: str) -> Any:
    """``app``'s tasks, with its task modules imported first when ``name`` is not among them.

    A command-line process (``celery -A ... dlq``) has not imported the modules that define the
    domain tasks; the app's ``include`` list names them.
    """
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks


class DeadLetterQueue:
    """The dead letters in one Redis database."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_entries: int = c.DLQ_MAX_ENTRIES,
        key: str = keys.DLQ_KEY,
        index_key: str = keys.DLQ_INDEX_KEY,
    ) -> None:
        self.client = client
        self.max_entries = max_entries
        self.key = key
        self.index_key = index_key
        self._add = client.register_script(_ADD_SCRIPT)
        self._read_script = client.register_script(_READ_SCRIPT)
        self._take = client.register_script(_TAKE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, max_entries: int = c.DLQ_MAX_ENTRIES) -> DeadLetterQueue:
        """A queue on the Redis at ``url`` (the broker's, normally), through the process's
        shared client for that URL."""
        if not is_redis_url(url):
            raise ValueError("the dead-letter queue needs a Redis URL (the broker or backend)")
        return cls(redis_clients.client_for(url), max_entries=max_entries)

    def add(self, letter: DeadLetter) -> str:
        """Store ``letter``; return its id."""
        letter.traceback = _clip(letter.traceback)
        letter.exception = _clip(letter.exception)
        if letter.raw is not None:
            letter.raw = _clip(letter.raw)
        # The priority the broker used (it clamps 10 to 9), so the entry stays replayable.
        letter.priority = stored_priority(letter.priority)
        self._add(
            keys=[self.key, self.index_key],
            args=[letter.id, letter.to_json(), letter.failed_at, self.max_entries],
        )
        return letter.id

    def __len__(self) -> int:
        return int(self.client.zcard(self.index_key))

    def _read(self, ids: Sequence[str | bytes], *, peek: int = 0) -> list[tuple[int, bytes]]:
        """(size, bytes) of each id's entry, size -1 when absent; see _READ_SCRIPT."""
        if not ids:
            return []
        reply = self._read_script(keys=[self.key], args=[DLQ_MAX_ENTRY_BYTES, peek, *ids])
        return [(int(reply[i]), _as_bytes(reply[i + 1])) for i in range(0, len(reply), 2)]

    @staticmethod
    def _letter(letter_id: str, size: int, raw: bytes) -> DeadLetter:
        if size > DLQ_MAX_ENTRY_BYTES:
            reason = f"{size} bytes, over the limit of {DLQ_MAX_ENTRY_BYTES} for an entry"
            raise UnreadableDeadLetter(letter_id, reason)
        return DeadLetter.from_json(raw, letter_id=letter_id)

    def scan(self, limit: int = 50, *, newest_first: bool = True) -> Listing:
        """Up to ``limit`` entries, newest first by default; those that do not read are listed
        apart (with why), so one bad entry never hides the others."""
        ids = cast(
            "list[bytes | str]",
            (self.client.zrevrange if newest_first else self.client.zrange)(
                self.index_key, 0, max(limit, 1) - 1
            ),
        )
        letters: list[DeadLetter] = []
        unreadable: list[UnreadableEntry] = []
        for key, (size, raw) in zip(ids, self._read(ids), strict=True):
            if size < 0:  # indexed but gone: a replay or purge took it meanwhile
                continue
            letter_id = _as_text(key)
            try:
                letters.append(self._letter(letter_id, size, raw))
            except UnreadableDeadLetter as exc:
                unreadable.append(UnreadableEntry(letter_id, exc.reason))
        return Listing(letters, unreadable)

    def list(self, limit: int = 50, *, newest_first: bool = True) -> list[DeadLetter]:
        """Up to ``limit`` entries that read as dead letters, newest first by default."""
        return self.scan(limit, newest_first=newest_first).letters

    def get(self, letter_id: str) -> DeadLetter:
        """The entry with this id; DeadLetterNotFound, or UnreadableDeadLetter saying why."""
        [(size, raw)] = self._read([letter_id])
        if size < 0:
            raise DeadLetterNotFound(letter_id)
        return self._letter(letter_id, size, raw)

    def get_raw(self, letter_id: str, limit: int) -> RawEntry:
        """The entry as stored, its first ``limit`` bytes as text, or DeadLetterNotFound."""
        [(size, raw)] = self._read([letter_id], peek=limit)
        if size < 0:
            raise DeadLetterNotFound(letter_id)
        return RawEntry(size, raw[:limit].decode("utf-8", "replace"))

    def replay(self, letter_id: str, app: Any) -> str:
        """Send the task again as first sent; the entry leaves the queue. Returns the new task id.

        The entry is read and checked first: an unreadable one (UnreadableDeadLetter), a rejected
        message (NotReplayable), or one naming a task ``app`` does not register, a queue no worker
        consumes or a priority outside 0-9 (ReplayRefused) stays where it is. Then it is taken
        out only if it is still the bytes checked (else DeadLetterChanged), so two replays cannot
        both send it, and put back as it was if publishing fails, so a broker outage loses nothing.
        """
        [(size, raw)] = self._read([letter_id])
        if size < 0:
            raise DeadLetterNotFound(letter_id)
        letter = self._letter(letter_id, size, raw)
        if not letter.replayable:
            raise NotReplayable(letter)
        problems = replay_problems(
            letter.task_name, letter.queue, letter.priority, _task_registry(app, letter.task_name)
        )
        if problems:
            raise ReplayRefused(letter, problems)
        taken = int(self._take(keys=[self.key, self.index_key], args=[letter_id, raw]))
        if taken == 0:
            raise DeadLetterNotFound(letter_id)
        if taken < 0:
            raise DeadLetterChanged(letter_id)
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
                headers={keys.DLQ_REPLAY_OF_HEADER: letter.id},
                **options,
            )
        except Exception:
            self._add(
                keys=[self.key, self.index_key],
                args=[letter_id, raw, letter.failed_at, self.max_entries],
            )
            raise
        return str(result.id)

    def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete the given entries (readable or not), or all of them; return how many went."""
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
