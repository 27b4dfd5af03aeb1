"""Queue depth: the exact number of waiting messages in each queue, read from the broker's Redis."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from personal_assistant.workers.broker.priority import redis_list_names


def queue_depths(client: redis.Redis, queues: Sequence[str]) -> dict[str, int]:
    """The exact number of waiting messages of each queue, in one pipeline round trip.

    On Redis a queue with priorities is ten lists (``queue``, ``queue\\x06\\x161`` ... ``\\x169``);
    counting only the first one (as the popular exporter does) misses every message published
    with a non-default bucket. Unacked (reserved) messages are not counted: they are being run.
    """
    names = {queue: redis_list_names(queue) for queue in queues}
    pipe = client.pipeline(transaction=False)
    for lists in names.values():
        for name in lists:
            pipe.llen(name)
    lengths = iter(pipe.execute())
    return {queue: sum(int(next(lengths)) for _ in lists) for queue, lists in names.items()}
