"""Custody on a real Redis: the fetch, ack, move, orphan and beat scripts through custody.py."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
import redis

from personal_assistant.workers import keys
from personal_assistant.workers.broker import custody, poison
from personal_assistant.workers.broker.custody import CustodyKeys, Orphan, wake_key

KEYS = CustodyKeys()  # kombu's default unacked names, our owner and consumers keys
SEP = keys.PRIORITY_SEPARATOR
NOW = 1_700_000_000.25


def message(tag: str, exchange: Any = "ex", routing_key: Any = "rk", body: str = "b") -> str:
    """A kombu message as the Redis transport stores it on a queue list."""
    info: dict[str, Any] = {}
    if exchange is not None:
        info["exchange"] = exchange
    if routing_key is not None:
        info["routing_key"] = routing_key
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {},
            "properties": {"delivery_tag": tag, "delivery_info": info, "priority": 0},
        }
    )


def fetch(
    client: redis.Redis,
    lists: list[str],
    queues: list[str],
    *,
    consumer: str = "c1",
    now: float = NOW,
    max_bytes: int = 100_000,
    keep_bytes: int = 20_000,
) -> Any:
    """One fetch, built and run as the transport does."""
    command = custody.fetch_command(
        KEYS,
        lists,
        queues,
        now=now,
        consumer=consumer,
        max_bytes=max_bytes,
        keep_bytes=keep_bytes,
    )
    return custody.fetch(client, command)


def fetch_one(client: redis.Redis, queue: str = "q", **options: Any) -> tuple[int, str, bytes]:
    """Fetch from ``queue``'s first list, which must hold something."""
    reply = fetch(client, [queue], [queue], **options)
    assert reply, "the fetch found nothing"
    number, tag, item = reply
    return int(number), tag.decode(), bytes(item)


def hget(client: redis.Redis, key: str, field: str) -> bytes | None:
    return cast("bytes | None", client.hget(key, field))


def in_custody(client: redis.Redis, tag: str) -> tuple[bool, bool, bool]:
    """Whether ``tag`` is in ``unacked``, ``unacked_index`` and the owner hash."""
    return (
        bool(client.hexists(KEYS.unacked, tag)),
        client.zscore(KEYS.index, tag) is not None,
        bool(client.hexists(KEYS.owner, tag)),
    )


def items(client: redis.Redis, key: str) -> list[bytes]:
    return cast("list[bytes]", client.lrange(key, 0, -1))


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def held_by(client: redis.Redis, consumer: str, tag: str) -> tuple[str, bytes]:
    """Fetch ``tag`` (pushed first) as ``consumer``; return its owner value and entry."""
    client.lpush("q", message(tag))
    fetch_one(client, consumer=consumer)
    entry, owner = custody.read_entry(client, KEYS, tag)
    assert entry is not None
    return owner, entry


# --- fetch -----------------------------------------------------------------------------------


def test_a_fetch_pops_the_earlier_list_first_and_says_which_list_it_came_from(
    redis_client: redis.Redis,
) -> None:
    lists = ["a", "b", f"a{SEP}1", f"b{SEP}1"]
    redis_client.lpush(f"b{SEP}1", message("low-b"))
    redis_client.lpush("b", message("high-b"))
    redis_client.lpush(f"a{SEP}1", message("low-a"))

    order = []
    for _ in range(3):
        number, tag, _item = fetch(redis_client, lists, ["a", "b"])
        order.append((int(number), tag.decode()))

    assert order == [(2, "high-b"), (3, "low-a"), (4, "low-b")]


def test_a_fetch_pops_the_oldest_message_of_a_list(redis_client: redis.Redis) -> None:
    redis_client.lpush("q", message("first"), message("second"))

    assert fetch_one(redis_client)[1] == "first"
    assert fetch_one(redis_client)[1] == "second"


def test_a_fetch_returns_the_message_as_stored(redis_client: redis.Redis) -> None:
    stored = message("t1")
    redis_client.lpush("q", stored)

    assert fetch_one(redis_client) == (1, "t1", stored.encode())
    assert items(redis_client, "q") == []


def test_a_fetch_writes_kombus_unacked_entry_with_exchange_and_routing_key(
    redis_client: redis.Redis,
) -> None:
    stored = message("t1", exchange="tasks", routing_key="ai_tasks")
    redis_client.lpush("q", stored)

    fetch_one(redis_client)

    entry = hget(redis_client, KEYS.unacked, "t1")
    assert entry is not None
    assert json.loads(entry) == [json.loads(stored), "tasks", "ai_tasks"]


def test_a_fetch_defaults_the_exchange_to_empty_and_the_routing_key_to_the_queue(
    redis_client: redis.Redis,
) -> None:
    redis_client.lpush("q", message("t1", exchange=None, routing_key=7))

    fetch_one(redis_client)

    entry = hget(redis_client, KEYS.unacked, "t1")
    assert entry is not None
    assert json.loads(entry)[1:] == ["", "q"]


def test_a_fetch_indexes_the_message_at_the_callers_time_and_records_its_owner(
    redis_client: redis.Redis,
) -> None:
    redis_client.lpush("q", message("t1"))

    fetch_one(redis_client, consumer="worker-7", now=NOW)

    assert redis_client.zscore(KEYS.index, "t1") == NOW
    assert hget(redis_client, KEYS.owner, "t1") == f"worker-7 {NOW!r}".encode()


def test_a_fetch_records_its_consumer_as_alive_by_redis_time(redis_client: redis.Redis) -> None:
    before = redis_now(redis_client)

    fetch(redis_client, ["q"], ["q"], consumer="worker-7", now=1.0)

    score = redis_client.zscore(KEYS.consumers, "worker-7")
    assert score is not None
    assert before <= score <= redis_now(redis_client)


def test_a_fetch_that_finds_nothing_returns_none_and_empties_its_queues_wake_lists(
    redis_client: redis.Redis,
) -> None:
    for queue in ("a", "b", "other"):
        redis_client.lpush(wake_key(queue), "", "")

    reply = fetch(redis_client, ["a", "b", f"a{SEP}1", f"b{SEP}1"], ["a", "b"])

    assert reply is None
    assert redis_client.exists(wake_key("a"), wake_key("b")) == 0
    assert redis_client.llen(wake_key("other")) == 2
    assert redis_client.hlen(KEYS.unacked) == 0


def test_a_fetch_that_finds_a_message_leaves_the_wake_lists_alone(
    redis_client: redis.Redis,
) -> None:
    redis_client.lpush(wake_key("q"), "")
    redis_client.lpush("q", message("t1"))

    fetch_one(redis_client)

    assert redis_client.llen(wake_key("q")) == 1


def decode_poison(item: bytes) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(item)
    assert envelope["content-type"] == poison.POISON_CONTENT_TYPE
    assert envelope["content-encoding"] == "binary"
    return envelope


def test_an_item_that_is_not_json_is_held_as_a_poison_envelope(redis_client: redis.Redis) -> None:
    redis_client.lpush("q", b"{not json")

    number, tag, item = fetch_one(redis_client, consumer="worker-7")

    envelope = decode_poison(item)
    assert number == 1
    assert tag.startswith("poison-worker-7-")
    assert envelope["body"] == "{not json"
    assert envelope["headers"] == {keys.POISON_HEADER: "not_json", keys.POISON_SIZE_HEADER: 9}
    assert envelope["properties"] == {
        "delivery_tag": tag,
        "priority": 0,
        "delivery_info": {"exchange": "", "routing_key": "q"},
    }
    entry = hget(redis_client, KEYS.unacked, tag)
    assert entry is not None
    assert json.loads(entry) == [envelope, "", "q"]
    assert in_custody(redis_client, tag) == (True, True, True)


@pytest.mark.parametrize("item", ["42", '"text"', "null"])
def test_json_that_is_not_an_object_is_poison_as_not_json(
    redis_client: redis.Redis, item: str
) -> None:
    redis_client.lpush("q", item)

    envelope = decode_poison(fetch_one(redis_client)[2])

    assert envelope["headers"][keys.POISON_HEADER] == "not_json"


@pytest.mark.parametrize(
    "item",
    [
        '{"body": "x"}',
        '{"properties": {"delivery_info": {}}}',
        '{"properties": {"delivery_tag": "", "delivery_info": {}}}',
        '{"properties": {"delivery_tag": 12, "delivery_info": {}}}',
        '{"properties": {"delivery_tag": "t"}}',
        '{"properties": {"delivery_tag": "t", "delivery_info": "q"}}',
        '{"properties": null}',
        "[1, 2]",
    ],
)
def test_a_json_object_without_a_delivery_tag_and_info_is_poison_as_malformed(
    redis_client: redis.Redis, item: str
) -> None:
    redis_client.lpush("q", item)

    tag, raw = fetch_one(redis_client)[1:]

    envelope = decode_poison(raw)
    assert tag.startswith("poison-")
    assert envelope["headers"] == {
        keys.POISON_HEADER: "malformed",
        keys.POISON_SIZE_HEADER: len(item),
    }
    assert envelope["body"] == item


def test_an_item_over_the_size_limit_is_poison_cut_to_the_kept_bytes_with_its_tail(
    redis_client: redis.Redis,
) -> None:
    stored = message("big", body="x" * 10_000)
    redis_client.lpush("q", stored)

    tag, raw = fetch_one(redis_client, max_bytes=4096, keep_bytes=100)[1:]

    envelope = decode_poison(raw)
    assert tag.startswith("poison-")
    assert envelope["headers"] == {
        keys.POISON_HEADER: "too_large",
        keys.POISON_SIZE_HEADER: len(stored),
        keys.POISON_TAIL_HEADER: stored[-4096:],
    }
    assert envelope["body"] == stored[:100]
    assert poison.named_in_tail(envelope["headers"]) == (None, None)  # this one names no task


def test_an_item_exactly_at_the_size_limit_is_a_message(redis_client: redis.Redis) -> None:
    stored = message("edge")
    redis_client.lpush("q", stored)

    tag = fetch_one(redis_client, max_bytes=len(stored))[1]

    assert tag == "edge"


def test_two_poison_items_get_distinct_tags(redis_client: redis.Redis) -> None:
    redis_client.lpush("q", "bad-1", "bad-2")

    first, second = fetch_one(redis_client)[1], fetch_one(redis_client)[1]

    assert first != second
    assert redis_client.hlen(KEYS.unacked) == 2


# --- ack -------------------------------------------------------------------------------------


def test_the_owner_acks_a_message_out_of_custody(redis_client: redis.Redis) -> None:
    held_by(redis_client, "c1", "t1")

    assert custody.ack(redis_client, KEYS, "t1", "c1") is True
    assert in_custody(redis_client, "t1") == (False, False, False)


def test_another_consumers_ack_is_refused_and_leaves_the_message_held(
    redis_client: redis.Redis,
) -> None:
    owner, entry = held_by(redis_client, "c1", "t1")

    assert custody.ack(redis_client, KEYS, "t1", "c2") is False
    assert custody.read_entry(redis_client, KEYS, "t1") == (entry, owner)
    assert redis_client.zscore(KEYS.index, "t1") == NOW


def test_a_consumer_whose_id_is_a_prefix_of_the_owners_cannot_ack(
    redis_client: redis.Redis,
) -> None:
    held_by(redis_client, "c12", "t1")

    assert custody.ack(redis_client, KEYS, "t1", "c1") is False
    assert in_custody(redis_client, "t1") == (True, True, True)


def test_an_entry_written_without_an_owner_is_acked_by_anyone(redis_client: redis.Redis) -> None:
    redis_client.hset(KEYS.unacked, "t1", '[{}, "", "q"]')
    redis_client.zadd(KEYS.index, {"t1": NOW})

    assert custody.ack(redis_client, KEYS, "t1", "c9") is True
    assert in_custody(redis_client, "t1") == (False, False, False)


def test_acking_a_message_no_longer_held_returns_false(redis_client: redis.Redis) -> None:
    assert custody.ack(redis_client, KEYS, "gone", "c1") is False


def test_a_script_redis_forgot_is_loaded_again(redis_client: redis.Redis) -> None:
    held_by(redis_client, "c1", "t1")
    redis_client.script_flush()

    assert custody.ack(redis_client, KEYS, "t1", "c1") is True


# --- move ------------------------------------------------------------------------------------


def move_back(
    client: redis.Redis,
    owner: str,
    entry: bytes,
    *,
    tag: str = "t1",
    dest: str = "dest",
    leftmost: bool = False,
) -> bool:
    """Move ``tag``, held as read (``owner``, ``entry``), back to the list ``dest``."""
    return custody.move(
        client,
        KEYS,
        tag,
        owner=owner,
        entry=entry,
        payload="back",
        destinations=[(dest, wake_key(dest))],
        leftmost=leftmost,
    )


@pytest.mark.parametrize(("leftmost", "position"), [(True, 0), (False, -1)])
def test_a_move_pushes_the_payload_wakes_the_queue_and_drops_custody(
    redis_client: redis.Redis, leftmost: bool, position: int
) -> None:
    owner, entry = held_by(redis_client, "c1", "t1")
    redis_client.lpush("dest", "older")

    moved = move_back(redis_client, owner, entry, leftmost=leftmost)

    assert moved is True
    assert items(redis_client, "dest")[position] == b"back"
    assert redis_client.llen("dest") == 2
    assert items(redis_client, wake_key("dest")) == [b""]
    assert 0 < redis_client.pttl(wake_key("dest")) <= custody.WAKE_TTL_MS
    assert in_custody(redis_client, "t1") == (False, False, False)


def test_a_move_pushes_to_every_destination_and_its_wake_list(redis_client: redis.Redis) -> None:
    owner, entry = held_by(redis_client, "c1", "t1")

    custody.move(
        redis_client,
        KEYS,
        "t1",
        owner=owner,
        entry=entry,
        payload="back",
        destinations=[("d1", wake_key("d1")), (f"d2{SEP}3", wake_key("d2"))],
        leftmost=False,
    )

    assert items(redis_client, "d1") == items(redis_client, f"d2{SEP}3") == [b"back"]
    assert redis_client.llen(wake_key("d1")) == redis_client.llen(wake_key("d2")) == 1


def test_a_move_is_refused_when_the_message_changed_owner_since_it_was_read(
    redis_client: redis.Redis,
) -> None:
    owner, entry = held_by(redis_client, "c1", "t1")
    redis_client.hset(KEYS.owner, "t1", "c2 1700000099.5")  # redelivered to c2 meanwhile

    moved = move_back(redis_client, owner, entry)

    assert moved is False
    assert redis_client.exists("dest", wake_key("dest")) == 0
    assert custody.read_entry(redis_client, KEYS, "t1") == (entry, "c2 1700000099.5")


def test_a_move_of_the_same_consumers_earlier_delivery_is_refused(
    redis_client: redis.Redis,
) -> None:
    owner, entry = held_by(redis_client, "c1", "t1")
    assert custody.move(
        redis_client,
        KEYS,
        "t1",
        owner=owner,
        entry=entry,
        payload=message("t1"),
        destinations=[("q", wake_key("q"))],
        leftmost=False,
    )
    fetch_one(redis_client, consumer="c1", now=NOW + 1)  # the same consumer, a new delivery

    moved = custody.move(
        redis_client,
        KEYS,
        "t1",
        owner=owner,
        entry=entry,
        payload="again",
        destinations=[("q", wake_key("q"))],
        leftmost=False,
    )

    assert moved is False
    assert in_custody(redis_client, "t1") == (True, True, True)


def test_an_entry_without_an_owner_moves_when_its_bytes_are_as_read(
    redis_client: redis.Redis,
) -> None:
    entry = b'[{"properties": {}}, "", "q"]'
    redis_client.hset(KEYS.unacked, "t1", entry)

    moved = custody.move(
        redis_client,
        KEYS,
        "t1",
        owner="",
        entry=entry,
        payload="back",
        destinations=[("q", wake_key("q"))],
        leftmost=False,
    )

    assert moved is True
    assert items(redis_client, "q") == [b"back"]
    assert redis_client.hlen(KEYS.unacked) == 0


def test_an_entry_without_an_owner_whose_bytes_changed_is_not_moved(
    redis_client: redis.Redis,
) -> None:
    redis_client.hset(KEYS.unacked, "t1", b"[2]")

    moved = move_back(redis_client, "", b"[1]", dest="q")

    assert moved is False
    assert redis_client.exists("q") == 0
    assert hget(redis_client, KEYS.unacked, "t1") == b"[2]"


def test_a_move_of_a_message_no_longer_held_is_refused(redis_client: redis.Redis) -> None:
    moved = move_back(redis_client, "", b"", tag="gone", dest="q")

    assert moved is False
    assert redis_client.exists("q", wake_key("q")) == 0


def test_of_two_concurrent_moves_of_one_read_entry_exactly_one_succeeds(
    redis_url: str, redis_client: redis.Redis
) -> None:
    owner, entry = held_by(redis_client, "c1", "t1")
    racers = 8
    start = threading.Barrier(racers)

    def race(_: int) -> bool:
        client = redis.Redis.from_url(redis_url)
        try:
            client.ping()
            start.wait(timeout=5)
            return custody.move(
                client,
                KEYS,
                "t1",
                owner=owner,
                entry=entry,
                payload="back",
                destinations=[("q", wake_key("q"))],
                leftmost=False,
            )
        finally:
            client.close()

    with ThreadPoolExecutor(racers) as pool:
        results = list(pool.map(race, range(racers)))

    assert results.count(True) == 1
    assert items(redis_client, "q") == [b"back"]
    assert redis_client.llen(wake_key("q")) == 1


# --- orphans, beat, forget -------------------------------------------------------------------


def test_orphans_are_the_messages_of_consumers_silent_longer_than_dead_after(
    redis_client: redis.Redis,
) -> None:
    dead_owner, dead_entry = held_by(redis_client, "dead", "t-dead")
    held_by(redis_client, "live", "t-live")
    redis_client.zadd(KEYS.consumers, {"dead": redis_now(redis_client) - 31})

    dead, held = custody.orphans(redis_client, KEYS, dead_after=30)

    assert dead == ["dead"]
    assert held == [Orphan("t-dead", dead_owner, dead_entry)]


def test_a_consumer_silent_for_less_than_dead_after_is_alive(redis_client: redis.Redis) -> None:
    held_by(redis_client, "slow", "t1")
    redis_client.zadd(KEYS.consumers, {"slow": redis_now(redis_client) - 20})

    assert custody.orphans(redis_client, KEYS, dead_after=30) == ([], [])


def test_abandoned_consumers_count_as_dead_at_once(redis_client: redis.Redis) -> None:
    owner, entry = held_by(redis_client, "closed", "t1")
    held_by(redis_client, "live", "t2")

    dead, held = custody.orphans(redis_client, KEYS, dead_after=30, abandoned=["closed", "idle"])

    assert sorted(dead) == ["closed", "idle"]
    assert held == [Orphan("t1", owner, entry)]


def test_a_consumer_both_silent_and_abandoned_is_listed_once(redis_client: redis.Redis) -> None:
    held_by(redis_client, "gone", "t1")
    redis_client.zadd(KEYS.consumers, {"gone": 0})

    dead, held = custody.orphans(redis_client, KEYS, dead_after=30, abandoned=["gone"])

    assert dead == ["gone"]
    assert [o.tag for o in held] == ["t1"]


def test_a_dead_consumer_holding_nothing_is_listed_with_no_messages(
    redis_client: redis.Redis,
) -> None:
    held_by(redis_client, "live", "t1")
    redis_client.zadd(KEYS.consumers, {"idle": 0})

    assert custody.orphans(redis_client, KEYS, dead_after=30) == (["idle"], [])


def test_entries_without_an_owner_are_never_orphans(redis_client: redis.Redis) -> None:
    redis_client.hset(KEYS.unacked, "kombu-tag", '[{}, "", "q"]')
    redis_client.zadd(KEYS.consumers, {"dead": 0})

    assert custody.orphans(redis_client, KEYS, dead_after=30) == (["dead"], [])


def test_a_beat_records_the_consumers_as_alive_by_redis_time(redis_client: redis.Redis) -> None:
    redis_client.zadd(KEYS.consumers, {"c1": 0, "c2": 0, "c3": 0})
    before = redis_now(redis_client)

    custody.beat(redis_client, KEYS, ["c1", "c2"])

    scores = dict(
        cast(
            "list[tuple[bytes, float]]", redis_client.zrange(KEYS.consumers, 0, -1, withscores=True)
        )
    )
    assert scores[b"c3"] == 0
    assert before <= scores[b"c1"] == scores[b"c2"] <= redis_now(redis_client)
    assert custody.orphans(redis_client, KEYS, dead_after=30)[0] == ["c3"]


def test_a_beat_of_no_consumers_writes_nothing(redis_client: redis.Redis) -> None:
    custody.beat(redis_client, KEYS, [])

    assert redis_client.exists(KEYS.consumers) == 0


def test_forgotten_consumers_leave_the_heartbeat_set(redis_client: redis.Redis) -> None:
    redis_client.zadd(KEYS.consumers, {"c1": 1, "c2": 2, "c3": 3})

    custody.forget(redis_client, KEYS, ["c1", "c3"])
    custody.forget(redis_client, KEYS, [])

    assert redis_client.zrange(KEYS.consumers, 0, -1) == [b"c2"]


# --- ids -------------------------------------------------------------------------------------


def test_consumer_ids_are_unique_and_hold_no_space() -> None:
    ids = {custody.new_consumer_id() for _ in range(100)}

    assert len(ids) == 100
    assert not any(" " in i for i in ids)


@pytest.mark.parametrize("owner", ["c1 1700000000.25", b"c1 1700000000.25", "c1"])
def test_the_owner_id_is_the_consumer_part_of_an_owner_value(owner: str | bytes) -> None:
    assert custody.owner_id(owner) == "c1"


def test_the_wake_list_of_a_queue_is_under_the_wake_prefix() -> None:
    assert wake_key("ai_tasks") == "pa:broker:wake:ai_tasks"
