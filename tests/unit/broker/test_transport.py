"""The reliable Redis transport in-process: kombu producers and consumers on a real Redis."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer, Producer

from personal_assistant.workers import keys
from personal_assistant.workers.broker import transport
from personal_assistant.workers.broker.priority import (
    redis_bucket_for,
    redis_list_names,
)
from personal_assistant.workers.broker.transport import ReliableChannel, ReliableRedisTransport
from tests.support.waiting import wait_for
from tests.unit.broker.conftest import OPTIONS, Connect, close

QUEUE = "unit_reliable"
EXCHANGE = Exchange(QUEUE, type="direct")
TASK_QUEUE = Queue(QUEUE, EXCHANGE, routing_key=QUEUE)
# The test queue's Redis lists, one per priority, the first-served (priority 9) first.
LISTS = redis_list_names(QUEUE)


def publish(conn: Any, body: Any, priority: int = 0, *, task: bool = True) -> None:
    """Publish ``body`` to the test queue; as a task message (with a ``task`` header, as Celery
    writes one) unless ``task`` is False."""
    Producer(conn.default_channel).publish(
        body,
        exchange=EXCHANGE,
        routing_key=QUEUE,
        declare=[TASK_QUEUE],
        priority=priority,
        serializer="json",
        headers={"task": "unit.task", "id": "unit-id"} if task else {},
    )


def consumer(conn: Any, on_message: Callable[[Any], None], *, no_ack: bool = False) -> Any:
    """A consumer of the test queue on ``conn``'s default channel (enter it to consume)."""
    return Consumer(conn.default_channel, [TASK_QUEUE], on_message=on_message, no_ack=no_ack)


def channel_of(conn: Any) -> ReliableChannel:
    channel = conn.default_channel
    assert isinstance(channel, ReliableChannel)
    return channel


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    """Every message waiting on the test queue, highest priority first, oldest first."""
    found: list[dict[str, Any]] = []
    for name in LISTS:
        raw = cast("list[bytes]", client.lrange(name, 0, -1))
        found += [json.loads(item) for item in reversed(raw)]
    return found


def owner_of(client: redis.Redis, tag: str) -> str | None:
    owner = cast("bytes | None", client.hget(keys.BROKER_OWNER_KEY, tag))
    return owner.decode() if owner is not None else None


def custody_size(client: redis.Redis) -> tuple[int, int, int]:
    """Entries in ``unacked``, ``unacked_index`` and the owner hash."""
    return (
        int(client.hlen(keys.KOMBU_UNACKED_KEY)),
        int(client.zcard(keys.KOMBU_UNACKED_INDEX_KEY)),
        int(client.hlen(keys.BROKER_OWNER_KEY)),
    )


def test_a_published_message_lands_in_its_priority_list_and_wakes_its_queue(
    connect: Connect, redis_client: redis.Redis
) -> None:
    publish(connect(), {"n": 1}, priority=3)

    lengths = [int(redis_client.llen(name)) for name in LISTS]
    assert lengths == [int(i == redis_bucket_for(3)) for i in range(len(LISTS))]
    assert redis_client.lrange(keys.broker_wake_key(QUEUE), 0, -1) == [b""]


def test_a_message_that_is_not_a_task_wakes_nobody(
    connect: Connect, redis_client: redis.Redis
) -> None:
    # Replies and events are read by no-ack consumers (kombu's BRPOP), which need no token.
    publish(connect(), {"reply": 1}, task=False)

    assert sum(int(redis_client.llen(name)) for name in LISTS) == 1
    assert redis_client.exists(keys.broker_wake_key(QUEUE)) == 0


def test_a_consumed_message_is_in_custody_before_the_callback_and_an_ack_removes_it(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1})
    seen: list[tuple[bool, str | None]] = []

    def on_message(message: Any) -> None:
        tag = message.delivery_tag
        seen.append(
            (bool(redis_client.hexists(keys.KOMBU_UNACKED_KEY, tag)), owner_of(redis_client, tag))
        )
        message.ack()

    with consumer(conn, on_message):
        conn.drain_events(timeout=2)

    [(held, owner)] = seen
    assert held
    assert owner is not None
    assert owner.split(" ")[0] == channel_of(conn).consumer_id
    assert custody_size(redis_client) == (0, 0, 0)
    assert queued(redis_client) == []


def test_a_message_rejected_with_requeue_goes_back_on_its_queue_marked_redelivered(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1}, priority=7)
    tags: list[str] = []

    def on_message(message: Any) -> None:
        tags.append(message.delivery_tag)
        message.reject(requeue=True)

    with consumer(conn, on_message):
        conn.drain_events(timeout=2)

    [back] = queued(redis_client)
    assert back["properties"]["delivery_tag"] == tags[0]
    assert back["headers"]["redelivered"] is True
    assert back["properties"]["delivery_info"]["redelivered"] is True
    assert redis_client.llen(LISTS[redis_bucket_for(7)]) == 1
    assert custody_size(redis_client) == (0, 0, 0)


def test_a_message_rejected_without_requeue_leaves_custody_and_the_queue(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1})

    with consumer(conn, lambda message: message.reject(requeue=False)):
        conn.drain_events(timeout=2)

    assert queued(redis_client) == []
    assert custody_size(redis_client) == (0, 0, 0)


def test_a_message_delivered_but_not_acked_goes_back_when_the_connection_closes(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1})
    received: list[Any] = []
    with consumer(conn, received.append):
        conn.drain_events(timeout=2)
    consumer_id = channel_of(conn).consumer_id
    assert custody_size(redis_client) == (1, 1, 1)

    close(conn)

    [back] = queued(redis_client)
    assert back["properties"]["delivery_tag"] == received[0].delivery_tag
    assert back["headers"]["redelivered"] is True
    assert custody_size(redis_client) == (0, 0, 0)
    assert redis_client.zscore(keys.BROKER_CONSUMERS_KEY, consumer_id) is None


def test_a_higher_priority_message_is_consumed_before_a_lower_one(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    for priority in (0, 9, 5):
        publish(conn, {"priority": priority}, priority=priority)
    order: list[int] = []

    def on_message(message: Any) -> None:
        order.append(json.loads(message.body)["priority"])
        message.ack()

    with consumer(conn, on_message):
        for _ in range(3):
            conn.drain_events(timeout=2)

    assert order == [9, 5, 0]


def test_a_no_ack_consumer_gets_messages_without_any_custody(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1})
    custody_seen: list[tuple[int, int, int]] = []

    def on_message(message: Any) -> None:
        custody_seen.append(custody_size(redis_client))

    with consumer(conn, on_message, no_ack=True):
        conn.drain_events(timeout=2)

    assert custody_seen == [(0, 0, 0)]
    assert queued(redis_client) == []
    assert redis_client.zscore(keys.BROKER_CONSUMERS_KEY, channel_of(conn).consumer_id) is None


def test_basic_get_fetches_a_message_into_custody_and_its_ack_releases_it(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1})
    channel = channel_of(conn)

    message = channel.basic_get(QUEUE, no_ack=False)

    assert message is not None
    assert json.loads(message.body) == {"n": 1}
    owner = owner_of(redis_client, message.delivery_tag)
    assert owner is not None
    assert owner.startswith(f"{channel.consumer_id} ")
    assert queued(redis_client) == []
    message.ack()
    assert custody_size(redis_client) == (0, 0, 0)


def test_basic_get_on_an_empty_queue_returns_nothing(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1})
    channel = channel_of(conn)
    first = channel.basic_get(QUEUE, no_ack=False)
    assert first is not None

    assert channel.basic_get(QUEUE, no_ack=False) is None
    first.ack()


def test_a_consumer_blocked_on_an_empty_queue_is_woken_by_a_publish_at_once(
    connect: Connect, redis_client: redis.Redis
) -> None:
    listener, producer = connect(), connect()
    # A poll long enough that only the wake list can explain a quick delivery.
    listener.transport.brpop_timeout = 5
    assert channel_of(listener).brpop_timeout == 5
    publish(producer, {"warm": True})
    channel_of(producer).basic_get(QUEUE, no_ack=True)  # declared, and the queue empty again
    received: list[float] = []

    def on_message(message: Any) -> None:
        received.append(time.monotonic())
        message.ack()

    def publish_once_blocked() -> float:
        wait_for(lambda: int(redis_client.info("clients")["blocked_clients"]) >= 1, timeout=5)
        sent = time.monotonic()
        publish(producer, {"n": 1})
        return sent

    with consumer(listener, on_message), ThreadPoolExecutor(1) as pool:
        sent = pool.submit(publish_once_blocked)
        listener.drain_events(timeout=5)
        latency = received[0] - sent.result()

    assert latency < 0.5


def test_an_item_that_is_not_json_is_delivered_as_poison_and_consuming_goes_on(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1}, priority=0)
    redis_client.lpush(LISTS[0], b"\x00 not json")  # the first-served list
    received: list[tuple[str, dict[str, Any], bytes]] = []

    def on_message(message: Any) -> None:
        received.append((message.delivery_tag, dict(message.headers), message.body))
        message.ack()

    with consumer(conn, on_message):
        conn.drain_events(timeout=2)
        conn.drain_events(timeout=2)

    (poison_tag, poison_headers, poison_body), (_, good_headers, good_body) = received
    assert poison_tag.startswith(f"poison-{channel_of(conn).consumer_id}-")
    assert poison_headers == {keys.POISON_HEADER: "not_json", keys.POISON_SIZE_HEADER: 10}
    assert poison_body == b"\x00 not json"
    assert keys.POISON_HEADER not in good_headers
    assert json.loads(good_body) == {"n": 1}
    assert custody_size(redis_client) == (0, 0, 0)


def test_undecodable_bytes_in_a_poison_message_are_delivered_as_hex_escapes(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    redis_client.lpush(LISTS[0], b"caf\xe9 \xff")
    received: list[Any] = []

    def on_message(message: Any) -> None:
        received.append(message)
        message.ack()

    with consumer(conn, on_message):
        conn.drain_events(timeout=2)

    [message] = received
    assert message.headers[keys.POISON_HEADER] == "not_json"
    assert message.body == b"caf\\xe9 \\xff"


def test_json_with_a_lone_surrogate_escape_is_delivered_as_poison(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    crafted = {
        "body": "\ud800",
        "content-type": "application/x-pa-poison",
        "content-encoding": "binary",
        "headers": {},
        "properties": {
            "delivery_tag": "t-crafted",
            "delivery_info": {"exchange": "", "routing_key": QUEUE},
            "priority": 0,
        },
    }
    raw = json.dumps(crafted)
    assert "\\ud800" in raw
    redis_client.lpush(LISTS[0], raw)
    received: list[Any] = []

    def on_message(message: Any) -> None:
        received.append(message)
        message.ack()

    with consumer(conn, on_message):
        conn.drain_events(timeout=2)

    [message] = received
    assert message.headers == {keys.POISON_HEADER: "not_json", keys.POISON_SIZE_HEADER: len(raw)}
    assert message.delivery_tag != "t-crafted"
    assert custody_size(redis_client) == (0, 0, 0)


@pytest.mark.parametrize(
    "raw", [b'{"note": "cafe"}', b'{"note": "caf\xe9"}'], ids=["utf8", "latin1"]
)
def test_a_requeued_poison_message_comes_back_with_its_reason(
    connect: Connect, redis_client: redis.Redis, raw: bytes
) -> None:
    conn = connect()
    redis_client.lpush(LISTS[0], raw)
    received: list[dict[str, Any]] = []

    def on_message(message: Any) -> None:
        received.append(dict(message.headers))
        if len(received) == 1:
            message.reject(requeue=True)
        else:
            message.ack()

    with consumer(conn, on_message):
        conn.drain_events(timeout=2)
        conn.drain_events(timeout=2)

    first, again = received
    assert first == {keys.POISON_HEADER: "malformed", keys.POISON_SIZE_HEADER: 16}
    assert again == {**first, "redelivered": True}


def hold_one_message(conn: Any) -> Any:
    """Consume one message of the test queue on ``conn`` and keep it unacknowledged."""
    received: list[Any] = []
    with consumer(conn, received.append):
        conn.drain_events(timeout=2)
    [message] = received
    return message


def test_the_messages_of_a_consumer_that_stopped_beating_are_reclaimed_to_their_queue(
    connect: Connect, redis_client: redis.Redis
) -> None:
    lost, rescuer = connect(), connect()
    publish(lost, {"n": 1}, priority=6)
    held = hold_one_message(lost)
    lost_id = channel_of(lost).consumer_id
    redis_client.zadd(keys.BROKER_CONSUMERS_KEY, {lost_id: 0})  # its last beat, long ago

    moved = channel_of(rescuer).reclaim_orphans()

    assert moved == 1
    [back] = queued(redis_client)
    assert back["properties"]["delivery_tag"] == held.delivery_tag
    assert back["headers"]["redelivered"] is True
    assert redis_client.llen(LISTS[redis_bucket_for(6)]) == 1
    assert custody_size(redis_client) == (0, 0, 0)
    assert redis_client.zscore(keys.BROKER_CONSUMERS_KEY, lost_id) is None
    close(lost)  # its own restore at close finds the message gone: no second copy
    assert len(queued(redis_client)) == 1


def test_a_live_consumers_messages_are_not_reclaimed(
    connect: Connect, redis_client: redis.Redis
) -> None:
    alive, other = connect(), connect()
    publish(alive, {"n": 1})
    hold_one_message(alive)

    assert channel_of(other).reclaim_orphans() == 0
    assert custody_size(redis_client) == (1, 1, 1)
    assert queued(redis_client) == []


def test_a_stale_owners_ack_after_a_redelivery_leaves_the_new_owners_custody(
    connect: Connect, redis_client: redis.Redis
) -> None:
    stale, fresh = connect(), connect()
    publish(stale, {"n": 1})
    old_delivery = hold_one_message(stale)
    redis_client.zadd(keys.BROKER_CONSUMERS_KEY, {channel_of(stale).consumer_id: 0})
    assert channel_of(fresh).reclaim_orphans() == 1
    new_delivery = hold_one_message(fresh)
    assert new_delivery.delivery_tag == old_delivery.delivery_tag
    fresh_owner = owner_of(redis_client, new_delivery.delivery_tag)

    old_delivery.ack()

    assert fresh_owner is not None
    assert fresh_owner.startswith(f"{channel_of(fresh).consumer_id} ")
    assert owner_of(redis_client, new_delivery.delivery_tag) == fresh_owner
    assert custody_size(redis_client) == (1, 1, 1)
    new_delivery.ack()
    assert custody_size(redis_client) == (0, 0, 0)


def test_closing_a_connection_leaves_no_redis_connection_of_it_open(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "_ABANDONED", set())
    name = f"unit-{uuid.uuid4().hex[:8]}"
    conn = Connection(
        redis_url,
        transport=ReliableRedisTransport,
        transport_options={**OPTIONS, "client_name": name},
    )
    channel = channel_of(conn)
    publish(conn, {"n": 1})

    def open_connections() -> int:
        clients = cast("list[dict[str, Any]]", redis_client.client_list())
        return sum(1 for c in clients if c.get("name") == name)

    assert open_connections() >= 1
    conn.release()
    try:
        wait_for(lambda: open_connections() == 0, timeout=0.5)
    finally:
        if channel._sync_client is not None:
            channel._sync_client.connection_pool.disconnect()


def test_closing_a_channel_that_never_used_redis_gives_it_back_quietly(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    conn = connect()
    consumer_id = channel_of(conn).consumer_id

    with caplog.at_level(logging.WARNING, logger=transport.__name__):
        close(conn)

    assert consumer_id not in transport._ABANDONED
    assert caplog.records == []
