"""Queue depth on a real Redis: every priority list of a queue is counted, in one round trip."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import redis_bucket_for, redis_list_names
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.monitoring.queue_depth import queue_depths

PROBE = f"{c.TASKS_PACKAGE}.file_tasks.probe"


def test_queue_depth_counts_messages_of_every_priority(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    priorities = [0, 1, 3, 5, 5, 7, 9, 9, 9, 2]
    for priority in priorities:
        producer_app.send_task(PROBE, queue=c.FILE_QUEUE, priority=priority)
    producer_app.send_task(PROBE, queue=c.EMAIL_QUEUE, priority=4)

    depths = queue_depths(redis_client, c.QUEUES)

    assert depths == {
        c.AI_QUEUE: 0,
        c.EMAIL_QUEUE: 1,
        c.FILE_QUEUE: len(priorities),
        c.SYNC_QUEUE: 0,
        c.MAINTENANCE_QUEUE: 0,
    }
    # The messages really are spread over several lists ...
    per_list = Counter(redis_bucket_for(p) for p in priorities)
    lists = redis_list_names(c.FILE_QUEUE)
    assert [int(redis_client.llen(name)) for name in lists] == [per_list[i] for i in range(10)]
    # ... so counting only the first one (the popular exporter's bug) is wrong.
    first_only = int(redis_client.llen(c.FILE_QUEUE))
    assert first_only == 3  # the three priority-9 messages
    assert first_only < depths[c.FILE_QUEUE]
    # Kombu's own count over its priority steps agrees.
    with producer_app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        assert channel._size(c.FILE_QUEUE) == depths[c.FILE_QUEUE]
        assert channel._size(c.EMAIL_QUEUE) == depths[c.EMAIL_QUEUE]


def test_queue_depth_is_one_round_trip_for_all_queues(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.rpush(redis_list_names(c.AI_QUEUE)[4], b"m1", b"m2")
    redis_client.rpush(c.SYNC_QUEUE, b"m3")
    pipelines = []
    real_pipeline = redis_client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        pipelines.append(pipe)
        return pipe

    monkeypatch.setattr(redis_client, "pipeline", counting_pipeline)
    depths = queue_depths(redis_client, c.QUEUES)

    assert depths[c.AI_QUEUE] == 2
    assert depths[c.SYNC_QUEUE] == 1
    assert len(pipelines) == 1
    assert queue_depths(redis_client, []) == {}
    assert queue_depths(redis_client, ["nobody_uses_this"]) == {"nobody_uses_this": 0}
