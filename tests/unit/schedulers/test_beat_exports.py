"""Beat's /metrics: the cluster-wide series and the entries come from the lock holder only, so
two beats never double them; every beat says whether it holds the lock (real Redis)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from personal_assistant.workers.metrics.cluster_series import exporter_hostname
from personal_assistant.workers.monitoring.liveness import WorkerRegistry
from personal_assistant.workers.schedulers.enhanced_scheduler import EnhancedScheduler
from tests.support.apps import MakeApp
from tests.support.redis_server import free_port

CLUSTER_FAMILIES = {
    "celery_queue_length",
    "celery_worker_up",
    "celery_beat_last_tick_timestamp_seconds",
}


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family name -> its samples (labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        family.name: [(dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


@pytest.fixture
def two_beats(
    make_app: MakeApp, redis_url: str, clean_env: pytest.MonkeyPatch
) -> Iterator[list[tuple[EnhancedScheduler, int]]]:
    """Two beats on one Redis, each serving /metrics; the first ticked first (it holds)."""
    beats = []
    for _ in range(2):
        port = free_port()
        app = make_app(celery_broker_url=redis_url, beat_metrics_port=port)
        beats.append((EnhancedScheduler(app=app), port))
    for scheduler, _ in beats:
        scheduler.tick()
    yield beats
    for scheduler, _ in beats:
        scheduler.close()


def test_only_the_holder_exports_the_cluster_wide_series_and_each_says_if_it_holds(
    two_beats: list[tuple[EnhancedScheduler, int]], redis_client: redis.Redis
) -> None:
    (holder, holder_port), (standby, standby_port) = two_beats
    WorkerRegistry(redis_client).beat("celery@web-1", queues=["ai_tasks"], pid=4242)

    from_holder, from_standby = scrape(holder_port), scrape(standby_port)

    assert holder.token is not None and standby.token is None
    assert set(from_holder) >= CLUSTER_FAMILIES
    assert not CLUSTER_FAMILIES & set(from_standby)
    assert "pa_beat_entry_runs" not in from_standby
    assert from_holder["pa_beat_lock_held"] == [({"owner": holder.owner}, 1.0)]
    assert from_standby["pa_beat_lock_held"] == [({"owner": standby.owner}, 0.0)]
    # The exporter's hostname: celery@ stripped.
    assert from_holder["celery_worker_up"] == [({"hostname": "web-1"}, 1.0)]
    queues = {labels["queue_name"] for labels, _ in from_holder["celery_queue_length"]}
    assert queues == {"ai_tasks", "email_tasks", "file_tasks", "sync_tasks", "maintenance_tasks"}


def test_a_node_name_loses_only_a_leading_celery_prefix() -> None:
    assert exporter_hostname("celery@web-1") == "web-1"
    assert exporter_hostname("local@web-1") == "local@web-1"
    assert exporter_hostname("web-celery@1") == "web-celery@1"


def test_the_holder_exports_running_workflows_and_waiting_dead_letters(
    two_beats: list[tuple[EnhancedScheduler, int]], redis_client: redis.Redis
) -> None:
    (_, holder_port), _ = two_beats
    redis_client.sadd("pa:wf:open", "w1", "w2")
    redis_client.zadd("pa:dlq:index", {"d1": 1.0})

    scraped = scrape(holder_port)

    assert scraped["pa_workflows_running"] == [({}, 2.0)]
    assert scraped["pa_dead_letters"] == [({}, 1.0)]
