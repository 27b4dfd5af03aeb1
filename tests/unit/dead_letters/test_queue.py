"""The dead-letter queue on a real Redis: add, list, replay, purge, bound; entries as JSON."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys, redis_clients
from personal_assistant.workers.broker.priority import redis_bucket_for, redis_list_names
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.dead_letters.checks import DLQ_MAX_ENTRY_BYTES
from personal_assistant.workers.dead_letters.queue import (
    DeadLetter,
    DeadLetterChanged,
    DeadLetterNotFound,
    DeadLetterQueue,
    NotReplayable,
    ReplayRefused,
    UnreadableDeadLetter,
    UnreadableEntry,
)

# Imported before any test makes an app, so the domain tasks are registered in every app made.
from personal_assistant.workers.tasks import ai_tasks, file_tasks, sync_tasks  # noqa: F401
from tests.support.dead_letters import MISSING, PROBE, fields_of, letter

SYNC_PROBE = f"{c.TASKS_PACKAGE}.sync_tasks.probe"
AI_PROBE = f"{c.TASKS_PACKAGE}.ai_tasks.probe"


@dataclass
class Sent:
    id: str


@dataclass
class DeadLetteringTask:
    """Stands in for a registered task of the base class (it writes dead letters)."""

    dead_letter: bool = True


class NoLoader:
    """Stands in for the app's loader: every task module is already imported."""

    def import_default_modules(self) -> None:
        """Nothing to import."""


@dataclass
class RecordingApp:
    """Stands in for a Celery app: records send_task calls (thread-safe), or fails them."""

    error: Exception | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tasks: dict[str, DeadLetteringTask] = field(
        default_factory=lambda: {PROBE: DeadLetteringTask()}
    )
    loader: NoLoader = field(default_factory=NoLoader)

    def send_task(self, name: str, **options: Any) -> Sent:
        if self.error is not None:
            raise self.error
        with self.lock:
            self.calls.append({"name": name, **options})
            return Sent(f"new-{len(self.calls)}")


@pytest.fixture
def dlq(redis_client: redis.Redis) -> DeadLetterQueue:
    return DeadLetterQueue(redis_client, max_entries=100)


def stored_ids(client: redis.Redis) -> tuple[set[str], set[str]]:
    """Ids in the hash and in the index: the two must always agree."""
    in_hash = {k.decode() for k in cast("list[bytes]", client.hkeys(keys.DLQ_KEY))}
    in_index = {k.decode() for k in cast("list[bytes]", client.zrange(keys.DLQ_INDEX_KEY, 0, -1))}
    return in_hash, in_index


def store_raw(client: redis.Redis, letter_id: str, raw: str | bytes, at: float = 1.0) -> None:
    """Write an entry as someone with access to Redis could, bypassing DeadLetterQueue.add."""
    client.hset(keys.DLQ_KEY, letter_id, raw)
    client.zadd(keys.DLQ_INDEX_KEY, {letter_id: at})


def tampered(client: redis.Redis, original: DeadLetter, **changes: Any) -> bytes:
    """Store ``original`` with fields changed, as someone with access to Redis could."""
    raw = fields_of(original, **changes).encode()
    store_raw(client, original.id, raw, original.failed_at)
    return raw


def stored(client: redis.Redis, letter_id: str) -> bytes | None:
    """The entry's bytes as stored, or None."""
    return cast("bytes | None", client.hget(keys.DLQ_KEY, letter_id))


def queued(client: redis.Redis) -> dict[str, int]:
    """Non-empty Redis lists of the domain queues, by list name."""
    depths = {name: int(client.llen(name)) for q in c.QUEUES for name in redis_list_names(q)}
    return {name: n for name, n in depths.items() if n}


# --- entries ---------------------------------------------------------------------------------


def test_a_dead_letter_survives_a_json_round_trip() -> None:
    original = letter(1, hostname="w@h", retries=4)

    assert DeadLetter.from_json(original.to_json()) == original


def test_arguments_json_cannot_hold_are_stored_as_their_repr() -> None:
    odd = letter(args=[{1, 2}], kwargs={"when": b"bytes"})

    restored = DeadLetter.from_json(odd.to_json())

    assert restored.args == [repr({1, 2})]
    assert restored.kwargs == {"when": repr(b"bytes")}


def test_reading_an_entry_ignores_fields_a_newer_version_added() -> None:
    original = letter(2)
    data = json.loads(original.to_json())
    data["added_later"] = "ignored"

    assert DeadLetter.from_json(json.dumps(data)) == original


# --- the queue on Redis ----------------------------------------------------------------------


def test_an_added_letter_can_be_read_back_by_its_id(dlq: DeadLetterQueue) -> None:
    original = letter(1)

    letter_id = dlq.add(original)

    assert letter_id == original.id
    assert dlq.get(letter_id) == original
    assert len(dlq) == 1


def test_getting_an_unknown_id_raises_dead_letter_not_found(dlq: DeadLetterQueue) -> None:
    with pytest.raises(DeadLetterNotFound):
        dlq.get("no-such-id")


def test_the_list_is_newest_first_and_limited(dlq: DeadLetterQueue) -> None:
    for n in (2, 0, 3, 1):
        dlq.add(letter(n))

    assert [x.task_id for x in dlq.list()] == ["task-3", "task-2", "task-1", "task-0"]
    assert [x.task_id for x in dlq.list(2)] == ["task-3", "task-2"]
    assert [x.task_id for x in dlq.list(2, newest_first=False)] == ["task-0", "task-1"]


def test_an_empty_queue_lists_nothing(dlq: DeadLetterQueue) -> None:
    assert dlq.list() == []
    assert len(dlq) == 0


def test_a_long_traceback_and_message_are_clipped(dlq: DeadLetterQueue) -> None:
    huge = "x" * (c.DLQ_MAX_FIELD_CHARS + 500)

    letter_id = dlq.add(letter(traceback=huge, exception=huge))

    stored = dlq.get(letter_id)
    assert stored.traceback.startswith("x" * c.DLQ_MAX_FIELD_CHARS)
    assert stored.traceback.endswith("[500 chars cut]")
    assert len(stored.exception) < len(huge)


def test_the_queue_is_bounded_and_drops_the_oldest_first(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=3)
    letters = [letter(n) for n in range(5)]
    for item in letters:
        dlq.add(item)

    kept = {item.id for item in letters[2:]}
    assert len(dlq) == 3
    assert stored_ids(redis_client) == (kept, kept)
    assert [x.task_id for x in dlq.list()] == ["task-4", "task-3", "task-2"]


def test_concurrent_adds_keep_the_bound_and_the_index_in_step(redis_url: str) -> None:
    def add_many(worker: int) -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            dlq = DeadLetterQueue(client, max_entries=10)
            for n in range(25):
                dlq.add(letter(worker * 100 + n))
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(add_many, range(4)))

    client = redis.Redis.from_url(redis_url)
    in_hash, in_index = stored_ids(client)
    client.close()
    assert len(in_hash) == 10
    assert in_hash == in_index


def test_purge_of_given_ids_removes_only_those(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    ids = [dlq.add(letter(n)) for n in range(3)]

    removed = dlq.purge([ids[0], ids[2], "unknown"])

    assert removed == 2
    assert stored_ids(redis_client) == ({ids[1]}, {ids[1]})


def test_purge_of_an_empty_list_removes_nothing(dlq: DeadLetterQueue) -> None:
    dlq.add(letter(1))

    assert dlq.purge([]) == 0
    assert len(dlq) == 1


def test_purge_of_everything_empties_the_queue(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    for n in range(4):
        dlq.add(letter(n))

    assert dlq.purge() == 4
    assert len(dlq) == 0
    assert redis_client.exists(keys.DLQ_KEY, keys.DLQ_INDEX_KEY) == 0


def test_a_queue_needs_a_redis_url() -> None:
    with pytest.raises(ValueError, match="needs a Redis URL"):
        DeadLetterQueue.from_url("amqp://guest:guest@rabbit:5672//")


def test_a_queue_from_url_talks_to_that_redis_through_the_shared_client(
    redis_url: str, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue.from_url(redis_url, max_entries=5)
    dlq.add(letter(1))

    assert redis_client.zcard(keys.DLQ_INDEX_KEY) == 1
    assert dlq.max_entries == 5
    assert dlq.client is redis_clients.client_for(redis_url)


def test_list_skips_an_entry_that_is_not_json_and_reports_it(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    readable = [letter(1), letter(3)]
    for item in readable:
        dlq.add(item)
    store_raw(redis_client, "broken", "{not json", at=1_700_000_002.0)

    listing = dlq.scan()

    assert [x.id for x in listing.letters] == [readable[1].id, readable[0].id]
    assert [x.id for x in listing.unreadable] == ["broken"]
    assert listing.unreadable[0].reason.startswith("not JSON")
    assert [x.id for x in dlq.list()] == [readable[1].id, readable[0].id]
    assert stored(redis_client, "broken") == b"{not json"


def test_getting_an_unreadable_entry_says_why_and_keeps_it(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    original = letter(1)
    raw = tampered(redis_client, original, args="not a list")

    with pytest.raises(UnreadableDeadLetter, match="args must be a list"):
        dlq.get(original.id)

    assert stored(redis_client, original.id) == raw


def test_an_oversized_entry_is_unreadable_and_only_its_start_is_fetched(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    store_raw(redis_client, "huge", b"{" + b" " * DLQ_MAX_ENTRY_BYTES + b"}")

    listing = dlq.scan()
    raw = dlq.get_raw("huge", 10)

    assert listing.letters == []
    assert listing.unreadable == [
        UnreadableEntry(
            "huge",
            f"{DLQ_MAX_ENTRY_BYTES + 2} bytes, over the limit of {DLQ_MAX_ENTRY_BYTES} "
            "for an entry",
        )
    ]
    assert (raw.size, raw.text) == (DLQ_MAX_ENTRY_BYTES + 2, "{" + " " * 9)


def test_raw_text_of_an_unknown_id_raises_dead_letter_not_found(dlq: DeadLetterQueue) -> None:
    with pytest.raises(DeadLetterNotFound):
        dlq.get_raw("no-such-id", 100)


def test_purge_removes_an_unreadable_entry(dlq: DeadLetterQueue, redis_client: redis.Redis) -> None:
    store_raw(redis_client, "broken", "{not json")

    assert dlq.purge(["broken"]) == 1
    assert stored_ids(redis_client) == (set(), set())


def test_a_priority_above_the_brokers_range_is_stored_as_the_broker_runs_it(
    dlq: DeadLetterQueue,
) -> None:
    # The seed's "10 = high": the broker clamps it to 9, and 9 is what a replay sends.
    letter_id = dlq.add(letter(1, priority=10))
    rejected_id = dlq.add(letter(2, priority="high", reason="bad_header", raw="..."))

    assert dlq.get(letter_id).priority == c.PRIORITY_MAX
    assert dlq.get(rejected_id).priority is None


# --- replay ----------------------------------------------------------------------------------


def test_replay_publishes_to_the_original_queue_and_priority_and_removes_the_entry(
    dlq: DeadLetterQueue, producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    original = letter(1, task_name=SYNC_PROBE, queue=c.SYNC_QUEUE, priority=2)
    dlq.add(original)

    new_id = dlq.replay(original.id, producer_app)

    bucket_list = redis_list_names(c.SYNC_QUEUE)[redis_bucket_for(2)]
    assert queued(redis_client) == {bucket_list: 1}
    message = json.loads(redis_client.lindex(bucket_list, 0))  # type: ignore[arg-type]
    assert message["headers"]["task"] == SYNC_PROBE
    assert message["headers"]["id"] == new_id
    assert message["headers"][keys.DLQ_REPLAY_OF_HEADER] == original.id
    assert message["headers"]["argsrepr"] == repr(original.args)
    assert len(dlq) == 0


def test_a_letter_without_queue_and_priority_is_replayed_along_the_tasks_route(
    dlq: DeadLetterQueue, producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    original = letter(1, queue=None, priority=None)
    dlq.add(original)

    dlq.replay(original.id, producer_app)

    # The priority is what the app gives the task when none is asked for (Celery applies a
    # registered task's own default over its route's); the queue is the route's.
    [(name, depth)] = queued(redis_client).items()
    assert (name in redis_list_names(c.FILE_QUEUE), depth) == (True, 1)


def test_replaying_an_unknown_id_raises_and_sends_nothing(dlq: DeadLetterQueue) -> None:
    app = RecordingApp()

    with pytest.raises(DeadLetterNotFound):
        dlq.replay("no-such-id", app)

    assert app.calls == []


def test_a_rejected_message_is_not_replayed_and_stays_in_the_queue(
    dlq: DeadLetterQueue,
) -> None:
    rejected = letter(1)
    rejected.reason, rejected.raw = "bad_header", "headers: {...}"
    dlq.add(rejected)
    app = RecordingApp()

    with pytest.raises(NotReplayable, match="rejected message \\(bad_header\\)"):
        dlq.replay(rejected.id, app)

    assert app.calls == []
    assert dlq.get(rejected.id).reason == "bad_header"


def test_a_replay_whose_publish_fails_puts_the_letter_back_byte_for_byte(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    original = letter(1)
    dlq.add(original)
    before = stored(redis_client, original.id)

    with pytest.raises(ConnectionError, match="broker down"):
        dlq.replay(original.id, RecordingApp(error=ConnectionError("broker down")))

    assert dlq.get(original.id) == original
    assert stored(redis_client, original.id) == before
    assert stored_ids(redis_client) == ({original.id}, {original.id})


def test_a_letter_replayed_by_many_operators_at_once_is_sent_exactly_once(
    dlq: DeadLetterQueue,
) -> None:
    original = letter(1)
    dlq.add(original)
    app = RecordingApp()
    contenders = 8
    start = threading.Barrier(contenders)

    def replay() -> str:
        start.wait(timeout=10)
        try:
            return dlq.replay(original.id, app)
        except DeadLetterNotFound:
            return "not found"

    with ThreadPoolExecutor(max_workers=contenders) as pool:
        outcomes = list(pool.map(lambda _: replay(), range(contenders)))

    assert sorted(outcomes) == ["new-1"] + ["not found"] * (contenders - 1)
    assert len(app.calls) == 1
    assert app.calls[0]["headers"] == {keys.DLQ_REPLAY_OF_HEADER: original.id}
    assert len(dlq) == 0


# --- replay refuses what this deployment does not run, and keeps it -------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"queue": "nowhere"}, "queue 'nowhere' is not one of ai_tasks, email_tasks"),
        ({"priority": 99}, "priority 99 is not from 0 to 9"),
        ({"priority": -1}, "priority -1 is not from 0 to 9"),
        ({"task_name": "tests.no_such_task"}, "task_name 'tests.no_such_task' is not a registered"),
        ({"task_name": "celery.chunks"}, "'celery.chunks' is not a task that writes dead letters"),
        (
            {"task_name": AI_PROBE, "queue": c.MAINTENANCE_QUEUE},
            f"queue 'maintenance_tasks' is not the queue of {AI_PROBE} \\(ai_tasks\\)",
        ),
    ],
    ids=[
        "unconsumed-queue",
        "priority-99",
        "priority-negative",
        "unknown-task",
        "celery-builtin",
        "foreign-queue",
    ],
)
def test_a_tampered_entry_is_refused_naming_the_field_and_stays_untouched(
    changes: dict[str, Any],
    reason: str,
    dlq: DeadLetterQueue,
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    original = letter(1)
    raw = tampered(redis_client, original, **changes)

    with pytest.raises(ReplayRefused, match=reason) as caught:
        dlq.replay(original.id, producer_app)

    assert str(caught.value).startswith(f"dead letter {original.id} not replayed: ")
    assert stored(redis_client, original.id) == raw
    assert stored_ids(redis_client) == ({original.id}, {original.id})
    assert queued(redis_client) == {}
    assert redis_client.exists("nowhere") == 0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"args": "not a list"}, "args must be a list, not a string"),
        ({"kwargs": ["a", "b"]}, "kwargs must be a mapping, not a list"),
        ({"args": MISSING}, "missing field args"),
        ({"task_name": MISSING}, "missing field task_name"),
        ({"priority": True}, "priority must be an integer, not a boolean"),
    ],
    ids=["args-not-a-list", "kwargs-not-a-mapping", "no-args", "no-task-name", "bool-priority"],
)
def test_replay_of_a_malformed_entry_is_refused_and_the_entry_is_not_deleted(
    changes: dict[str, Any], reason: str, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    original = letter(1)
    raw = tampered(redis_client, original, **changes)
    app = RecordingApp()

    with pytest.raises(UnreadableDeadLetter, match=reason):
        dlq.replay(original.id, app)

    assert app.calls == []
    assert stored(redis_client, original.id) == raw
    assert stored_ids(redis_client) == ({original.id}, {original.id})


def test_replay_of_an_entry_that_is_not_json_keeps_it(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    store_raw(redis_client, "broken", "{not json")
    app = RecordingApp()

    with pytest.raises(UnreadableDeadLetter, match="dead letter broken is unreadable: not JSON"):
        dlq.replay("broken", app)

    assert app.calls == []
    assert stored(redis_client, "broken") == b"{not json"


def test_an_entry_rewritten_after_its_check_is_not_taken_nor_sent(
    dlq: DeadLetterQueue, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = letter(1)
    dlq.add(original)
    rewritten = fields_of(original, args=["rewritten"])
    check = DeadLetterQueue._letter

    def check_then_rewrite(letter_id: str, size: int, raw: bytes) -> DeadLetter:
        checked = check(letter_id, size, raw)
        redis_client.hset(keys.DLQ_KEY, letter_id, rewritten)  # lands between check and take
        return checked

    monkeypatch.setattr(DeadLetterQueue, "_letter", staticmethod(check_then_rewrite))
    app = RecordingApp()

    with pytest.raises(DeadLetterChanged, match="nothing was sent"):
        dlq.replay(original.id, app)

    assert app.calls == []
    assert stored(redis_client, original.id) == rewritten.encode()
