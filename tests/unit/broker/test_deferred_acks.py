"""Acks made on the worker's event-loop thread ride with the consumer's next fetch.

A worker acks a task when it ends and fetches the next one right after: sent in one write, the
two cost one round trip. An ack never waits long (the timer sends it alone), never goes missing
when the channel closes or its connection drops, and an acked message is never put back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu.asynchronous import Hub

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.broker import custody, deferred_acks
from tests.unit.broker.conftest import Connect, close
from tests.unit.broker.test_transport import (
    channel_of,
    consumer,
    custody_size,
    hold_one_message,
    publish,
    queued,
)


@pytest.fixture(autouse=True)
def no_unsent_acks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Acks this process could not send are remembered per process: none at the start."""
    monkeypatch.setattr(deferred_acks, "UNSENT", [])


@pytest.fixture
def loop() -> Iterator[Hub]:
    """A kombu event loop whose thread is this test's (as the worker's consumer thread is)."""
    hub = Hub()
    hub._loop_thread = threading.get_ident()
    yield hub
    hub.close()


def on_loop(conn: Any, hub: Hub) -> Any:
    """``conn`` as the worker's consumer connection: registered with the event loop."""
    conn.transport.ack_loop = hub
    return conn


def test_an_ack_on_the_loop_thread_is_sent_with_the_next_fetch(
    connect: Connect, loop: Hub, redis_client: redis.Redis
) -> None:
    conn = on_loop(connect(), loop)
    publish(conn, {"n": 1})
    first = hold_one_message(conn)

    first.ack()
    assert custody_size(redis_client) == (1, 1, 1)  # not sent yet: no round trip of its own

    publish(conn, {"n": 2})
    second = hold_one_message(conn)  # the fetch carries the ack

    assert not redis_client.hexists(keys.KOMBU_UNACKED_KEY, first.delivery_tag)
    assert redis_client.hexists(keys.KOMBU_UNACKED_KEY, second.delivery_tag)
    assert channel_of(conn).acks.waiting == []


def test_an_ack_no_fetch_carries_is_sent_alone_after_the_delay(
    connect: Connect, loop: Hub, redis_client: redis.Redis
) -> None:
    conn = on_loop(connect(), loop)
    publish(conn, {"n": 1})
    hold_one_message(conn).ack()
    assert custody_size(redis_client) == (1, 1, 1)

    time.sleep(c.BROKER_ACK_DELAY_S * 2)
    loop.fire_timers()

    assert custody_size(redis_client) == (0, 0, 0)


def test_an_ack_off_the_loop_thread_is_sent_at_once(
    connect: Connect, loop: Hub, redis_client: redis.Redis
) -> None:
    conn = on_loop(connect(), loop)
    loop._loop_thread = -1  # the threads pool acks from its own threads
    publish(conn, {"n": 1})
    hold_one_message(conn).ack()

    assert custody_size(redis_client) == (0, 0, 0)


def test_an_ack_without_an_event_loop_is_sent_at_once(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    publish(conn, {"n": 1})
    hold_one_message(conn).ack()

    assert custody_size(redis_client) == (0, 0, 0)


def test_closing_sends_pending_acks_and_puts_back_only_what_was_not_acked(
    connect: Connect, loop: Hub, redis_client: redis.Redis
) -> None:
    conn = on_loop(connect(), loop)
    publish(conn, {"n": 1})
    publish(conn, {"n": 2})
    received: list[Any] = []
    with consumer(conn, received.append):
        conn.drain_events(timeout=2)
        conn.drain_events(timeout=2)
    done, unfinished = received
    done.ack()

    close(conn)

    assert [m["properties"]["delivery_tag"] for m in queued(redis_client)] == [
        unfinished.delivery_tag
    ]
    assert custody_size(redis_client) == (0, 0, 0)


def test_acks_a_lost_connection_did_not_send_go_before_its_messages_are_reclaimed(
    connect: Connect, loop: Hub, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost, rescuer = on_loop(connect(), loop), connect()
    publish(lost, {"n": 1})
    message = hold_one_message(lost)
    message.ack()
    channel = channel_of(lost)

    def broken(*args: Any, **kwargs: Any) -> int:
        raise redis.ConnectionError("connection lost")

    with monkeypatch.context() as patched:
        patched.setattr(custody, "ack_many", broken)
        with pytest.raises(redis.ConnectionError):
            channel.flush_acks()
    unsent = deferred_acks.UNSENT
    assert unsent == [(channel.consumer_id, message.delivery_tag)]

    redis_client.zadd(keys.BROKER_CONSUMERS_KEY, {channel.consumer_id: 0})  # silent since
    assert channel_of(rescuer).reclaim_orphans() == 0

    assert queued(redis_client) == []  # acked: done, not put back to run again
    assert custody_size(redis_client) == (0, 0, 0)
    assert deferred_acks.UNSENT == []


def test_acks_sent_together_report_what_they_removed_even_after_redis_forgot_the_script(
    connect: Connect, redis_client: redis.Redis
) -> None:
    conn = connect()
    for n in range(3):
        publish(conn, {"n": n})
    channel = channel_of(conn)
    received: list[Any] = []
    with consumer(conn, received.append):
        for _ in range(3):
            conn.drain_events(timeout=2)
    tags = [m.delivery_tag for m in received]

    redis_client.script_flush()  # a restarted Redis: the pipeline loads the script again

    removed = custody.ack_many(redis_client, channel.keys, [*tags, "unknown"], channel.consumer_id)

    assert removed == 3
    assert custody_size(redis_client) == (0, 0, 0)
