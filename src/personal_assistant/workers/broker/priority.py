"""Kombu's Redis transport with RabbitMQ's priority direction: a higher number runs first.

Kombu's Redis transport keeps one list per queue and priority step and pops them in step order,
so bucket 0 is served first: priority 0 is the *highest* there, while on RabbitMQ 9 is. The seed
(and every caller who reads "priority=9" as "urgent") means the RabbitMQ direction. Rather than
translate numbers at every publish site (and again, wrongly, on every retry and redelivery, which
republish the priority the message carries), this channel flips the one decision that maps a
message's priority to a bucket. Messages keep the number the producer gave, so retries, restores
after a lost worker, and the dead-letter replay all land in the same bucket again.

The reliable transport (transport.py) builds on this channel; Celery selects it through
``broker_transport`` for ``redis://`` and ``rediss://`` URLs, so the URL users configure does
not change.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys

PRIORITY_TRANSPORT_PATH = f"{__name__}:PriorityRedisTransport"
# Ten lists per queue, one per priority, so every level is distinct (kombu's default is 4 steps).
PRIORITY_STEPS: list[int] = list(range(c.PRIORITY_MIN, c.PRIORITY_MAX + 1))


def redis_bucket_for(priority: int) -> int:
    """The kombu bucket (0 is popped first) a message of this priority is stored in."""
    clamped = max(c.PRIORITY_MIN, min(int(priority), c.PRIORITY_MAX))
    return c.PRIORITY_MAX - clamped


def redis_list_names(queue: str, sep: str = keys.PRIORITY_SEPARATOR) -> list[str]:
    """Every Redis list that holds messages of ``queue``, highest priority first."""
    return [keys.priority_list_key(queue, step, sep) for step in PRIORITY_STEPS]


class PriorityChannel(kombu_redis.Channel):
    """Redis channel that stores priority 9 in the first-served bucket and 0 in the last."""

    def _get_message_priority(self, message: dict[str, Any], reverse: bool = False) -> int:
        # Every bucket decision in kombu's Redis channel (publish, restore of unacked messages)
        # goes through this method with reverse=False; flipping it here flips them all at once.
        flipped = super()._get_message_priority(message, reverse=not reverse)  # type: ignore[no-untyped-call]
        return int(flipped)


class PriorityRedisTransport(kombu_redis.Transport):
    """Kombu Redis transport whose channels use :class:`PriorityChannel`."""

    Channel = PriorityChannel
