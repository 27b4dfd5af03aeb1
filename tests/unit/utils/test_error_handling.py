"""Error taxonomy and the dead-letter queue on a real Redis: add, list, replay, purge, bound."""

from __future__ import annotations

import errno
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import redis_bucket_for, redis_list_names
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.utils.error_handling import (
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterQueue,
    NotReplayable,
    PermanentError,
    TransientError,
    is_transient,
)

PROBE = f"{c.TASKS_PACKAGE}.file_tasks.probe"


def letter(n: int = 0, **fields: Any) -> DeadLetter:
    """A dead letter failed at time ``n`` (so the order of several is known)."""
    values: dict[str, Any] = {
        "task_name": PROBE,
        "task_id": f"task-{n}",
        "args": [n, "x"],
        "kwargs": {"n": n},
        "exception_type": "PermanentError",
        "exception": f"failure {n}",
        "traceback": f"Traceback (most recent call last):\n  failure {n}",
        "queue": c.FILE_QUEUE,
        "priority": 3,
        "failed_at": 1_700_000_000.0 + n,
    }
    values.update(fields)
    return DeadLetter(**values)


@dataclass
class Sent:
    id: str


@dataclass
class RecordingApp:
    """Stands in for a Celery app: records send_task calls (thread-safe), or fails them."""

    error: Exception | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

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
    in_hash = {k.decode() for k in cast("list[bytes]", client.hkeys(c.DLQ_KEY))}
    in_index = {k.decode() for k in cast("list[bytes]", client.zrange(c.DLQ_INDEX_KEY, 0, -1))}
    return in_hash, in_index


def queued(client: redis.Redis) -> dict[str, int]:
    """Non-empty Redis lists of the domain queues, by list name."""
    depths = {name: int(client.llen(name)) for q in c.QUEUES for name in redis_list_names(q)}
    return {name: n for name, n in depths.items() if n}


# --- error classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        TransientError("503"),
        ConnectionError("reset"),
        ConnectionRefusedError("refused"),
        TimeoutError("slow"),
        redis.ConnectionError("redis down"),
        redis.TimeoutError("redis slow"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        PermanentError("bad input"),
        ValueError("bad value"),
        KeyError("missing"),
        FileNotFoundError("gone"),
        PermissionError("denied"),
        IsADirectoryError("dir"),
        RuntimeError("bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_and_unknown_errors_are_not_retried(exc: BaseException) -> None:
    assert is_transient(exc) is False


def test_a_permanent_error_wins_over_a_transient_base_class() -> None:
    class PermanentTimeout(PermanentError, TimeoutError):
        pass

    assert is_transient(PermanentTimeout("never retried")) is False


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENETUNREACH, "Network is unreachable"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    ],
    ids=["ENETUNREACH", "EHOSTUNREACH", "EAI_AGAIN"],
)
def test_network_level_os_errors_are_retried(exc: OSError) -> None:
    assert is_transient(exc) is True


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
    assert redis_client.exists(c.DLQ_KEY, c.DLQ_INDEX_KEY) == 0


def test_a_queue_needs_a_redis_url() -> None:
    with pytest.raises(ValueError, match="needs a Redis URL"):
        DeadLetterQueue.from_url("amqp://guest:guest@rabbit:5672//")


def test_a_queue_from_url_talks_to_that_redis(redis_url: str, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue.from_url(redis_url, max_entries=5)
    try:
        dlq.add(letter(1))
    finally:
        dlq.client.close()

    assert redis_client.zcard(c.DLQ_INDEX_KEY) == 1
    assert dlq.max_entries == 5


# --- replay ----------------------------------------------------------------------------------


def test_replay_publishes_to_the_original_queue_and_priority_and_removes_the_entry(
    dlq: DeadLetterQueue, producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    original = letter(1, queue=c.SYNC_QUEUE, priority=2)
    dlq.add(original)

    new_id = dlq.replay(original.id, producer_app)

    bucket_list = redis_list_names(c.SYNC_QUEUE)[redis_bucket_for(2)]
    assert queued(redis_client) == {bucket_list: 1}
    message = json.loads(redis_client.lindex(bucket_list, 0))  # type: ignore[arg-type]
    assert message["headers"]["task"] == PROBE
    assert message["headers"]["id"] == new_id
    assert message["headers"]["dlq_replay_of"] == original.id
    assert message["headers"]["argsrepr"] == repr(original.args)
    assert len(dlq) == 0


def test_a_letter_without_queue_and_priority_is_replayed_along_the_tasks_route(
    dlq: DeadLetterQueue, producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    original = letter(1, queue=None, priority=None)
    dlq.add(original)

    dlq.replay(original.id, producer_app)

    bucket = redis_bucket_for(c.DOMAIN_PRIORITIES[c.FILE_QUEUE])
    assert queued(redis_client) == {redis_list_names(c.FILE_QUEUE)[bucket]: 1}


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


def test_a_replay_whose_publish_fails_puts_the_letter_back(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    original = letter(1)
    dlq.add(original)

    with pytest.raises(ConnectionError, match="broker down"):
        dlq.replay(original.id, RecordingApp(error=ConnectionError("broker down")))

    assert dlq.get(original.id) == original
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
    assert app.calls[0]["headers"] == {"dlq_replay_of": original.id}
    assert len(dlq) == 0
