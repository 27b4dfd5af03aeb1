"""``celery_task_sent_total``: sends counted in the producer, added to Redis in batches, and
exported by every worker."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable

import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp, create_app
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.metrics.sent_counter import (
    SENT_KEY,
    SentCollector,
    SentCounter,
    read_sent,
)
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration


def test_sends_are_added_to_redis_in_one_batch_within_the_flush_interval(
    redis_client: redis.Redis,
) -> None:
    counter = SentCounter(lambda: redis_client, hostname="web-1", flush_every=0.2)
    for _ in range(3):
        counter.count("tasks.a", "file_tasks")
    counter.count("tasks.a", "sync_tasks")
    assert read_sent(redis_client) == {}  # nothing sent per publish
    wait_for(lambda: read_sent(redis_client) != {}, timeout=5)
    assert read_sent(redis_client) == {
        ("tasks.a", "web-1", "file_tasks"): 3,
        ("tasks.a", "web-1", "sync_tasks"): 1,
    }


def test_counts_survive_a_redis_outage_until_a_flush_succeeds(redis_client: redis.Redis) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    current = [dead]
    counter = SentCounter(lambda: current[0], hostname="web-1", flush_every=60)
    counter.count("tasks.a", "file_tasks")
    counter.flush()  # refused: the count is kept
    counter.count("tasks.a", "file_tasks")
    current[0] = redis_client
    counter.flush()
    assert read_sent(redis_client) == {("tasks.a", "web-1", "file_tasks"): 2}


def test_a_forked_child_does_not_add_the_counts_it_inherited(redis_client: redis.Redis) -> None:
    counter = SentCounter(lambda: redis_client, hostname="web-1", flush_every=60)
    counter.count("tasks.a", "file_tasks")
    pid = os.fork()
    if pid == 0:  # the child: what it inherited is the parent's to add
        try:
            counter.count("tasks.child", "file_tasks")
            counter.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    counter.flush()
    assert read_sent(redis_client) == {
        ("tasks.a", "web-1", "file_tasks"): 1,
        ("tasks.child", "web-1", "file_tasks"): 1,
    }


def test_the_collector_exports_every_series_and_skips_a_field_it_did_not_write(
    redis_client: redis.Redis,
) -> None:
    redis_client.hset(SENT_KEY, mapping={'["tasks.a", "web-1", "file_tasks"]': 4, "junk": 1})
    registry = CollectorRegistry()
    registry.register(SentCollector(redis_client))
    labels = {"name": "tasks.a", "hostname": "web-1", "queue_name": "file_tasks"}
    assert registry.get_sample_value("celery_task_sent_total", labels) == 4


def test_beats_scrape_shows_what_a_producer_sent(
    producer_app: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
    beat_metrics: Callable[..., int],
) -> None:
    start_worker([c.FILE_QUEUE])
    port = beat_metrics()
    for _ in range(5):
        producer_app.send_task("tests.noop", queue=c.FILE_QUEUE)

    def sent() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "celery_task_sent_total" and s.labels["name"] == "tests.noop"
        )

    assert wait_for(lambda: sent() == 5, timeout=10)  # within a flush, not per publish


def test_a_publish_is_counted_by_the_app_that_made_it_only(
    producer_app: WorkerApp, redis_url: str, redis_client: redis.Redis
) -> None:
    # Signals are process-wide: another app in the same process must not count this send.
    other_url = redis_url.rsplit("/", 1)[0] + "/3"
    other = create_app(load_settings(celery_broker_url=other_url, celery_result_backend=other_url))
    try:
        producer_app.send_task("tests.noop", queue=c.FILE_QUEUE)
        producer_app.sent_counter.flush()
        other.sent_counter.flush()
        [(labels, sent)] = read_sent(redis_client).items()
        assert (labels[0], labels[2], sent) == ("tests.noop", c.FILE_QUEUE, 1)
        assert read_sent(redis.Redis.from_url(other_url)) == {}
    finally:
        other.close()
