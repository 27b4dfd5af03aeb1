"""The Redis transport stores a higher priority in an earlier-served bucket."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import (
    PRIORITY_STEPS,
    PriorityChannel,
    PriorityRedisTransport,
    redis_bucket_for,
    redis_list_names,
)

SEP = "\x06\x16"


def unconnected_channel() -> PriorityChannel:
    """A channel object without a connection: enough for the pure bucket decision."""
    channel: PriorityChannel = PriorityChannel.__new__(PriorityChannel)
    return channel


@pytest.mark.parametrize(
    ("priority", "bucket"),
    [(9, 0), (0, 9), (5, 4), (7, 2), (10, 0), (-1, 9), (100, 0)],
)
def test_redis_bucket_for_flips_and_clamps_the_priority(priority: int, bucket: int) -> None:
    assert redis_bucket_for(priority) == bucket


def test_priority_steps_are_the_ten_levels() -> None:
    assert list(range(10)) == PRIORITY_STEPS


def test_redis_list_names_lists_every_bucket_highest_priority_first() -> None:
    names = redis_list_names("ai_tasks")

    assert names[0] == "ai_tasks"
    assert names[1:] == [f"ai_tasks{SEP}{step}" for step in range(1, 10)]
    assert len(set(names)) == 10


def test_redis_list_names_uses_the_given_separator() -> None:
    assert redis_list_names("q", sep=":")[3] == "q:3"


@pytest.mark.parametrize("priority", range(c.PRIORITY_MIN, c.PRIORITY_MAX + 1))
def test_the_channel_puts_a_message_in_the_flipped_bucket(priority: int) -> None:
    message: dict[str, Any] = {"properties": {"priority": priority}}

    assert unconnected_channel()._get_message_priority(message) == redis_bucket_for(priority)


@pytest.mark.parametrize(("priority", "bucket"), [(42, 0), (-3, 9)])
def test_the_channel_clamps_an_out_of_range_priority(priority: int, bucket: int) -> None:
    message: dict[str, Any] = {"properties": {"priority": priority}}

    assert unconnected_channel()._get_message_priority(message) == bucket


def test_the_channel_reverse_lookup_gives_back_the_priority() -> None:
    message: dict[str, Any] = {"properties": {"priority": 8}}

    assert unconnected_channel()._get_message_priority(message, reverse=True) == 8


def test_the_transport_uses_the_priority_channel() -> None:
    assert PriorityRedisTransport.Channel is PriorityChannel


@pytest.mark.parametrize("priority", [0, 3, 9])
def test_a_published_message_lands_in_the_redis_list_of_its_flipped_bucket(
    redis_url: str, redis_client: redis.Redis, priority: int
) -> None:
    queue = Queue("unit_q", Exchange("unit_q", type="direct"), routing_key="unit_q")
    options = {"queue_order_strategy": "priority", "priority_steps": PRIORITY_STEPS}

    with Connection(redis_url, transport=PriorityRedisTransport, transport_options=options) as conn:
        producer = Producer(conn.default_channel)
        producer.publish(
            {"n": priority},
            exchange=queue.exchange,
            routing_key="unit_q",
            declare=[queue],
            priority=priority,
            serializer="json",
        )

    lengths = {name: int(redis_client.llen(name)) for name in redis_list_names("unit_q")}
    expected = redis_list_names("unit_q")[redis_bucket_for(priority)]
    assert lengths == {name: int(name == expected) for name in lengths}
