"""A worker killed with SIGKILL shows as down within a bounded time, and its series stays."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from personal_assistant.workers import constants as c
from personal_assistant.workers.store.migrate import upgrade
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

FAST_LIVENESS = {"WORKER_HEARTBEAT_INTERVAL": "0.5", "WORKER_DOWN_AFTER": "2"}


def worker_up(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["hostname"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "celery_worker_up"
        for sample in family.samples
    }


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_a_sigkilled_worker_is_reported_down_by_beat_and_stays_listed(
    start_worker: Callable[..., WorkerProcess],
    beat_metrics: Callable[..., int],
    tmp_path: Path,
) -> None:
    # Ready means its store is migrated too (the email queue's tasks need it).
    store = f"sqlite:///{tmp_path / 'assistant.db'}"
    upgrade(store)
    liveness = {**FAST_LIVENESS, "DATABASE_URL": store}
    watcher_port = beat_metrics(
        worker_down_after=2, worker_heartbeat_interval=0.5
    )  # beat exports every worker's up
    victim_port = free_port()
    watcher = start_worker([c.AI_QUEUE], env=liveness)
    victim = start_worker([c.EMAIL_QUEUE], env={**liveness, "METRICS_PORT": str(victim_port)})
    seen = wait_for(
        lambda: len(worker_up(watcher_port)) == 2 and worker_up(watcher_port), timeout=30
    )
    assert seen == {watcher.hostname: 1.0, victim.hostname: 1.0}
    assert worker_up(victim_port) == {}  # a worker exports no cluster-wide series
    assert http_status(f"http://127.0.0.1:{victim_port}/healthz") == 200
    assert http_status(f"http://127.0.0.1:{victim_port}/readyz") == 200

    killed_at = time.monotonic()
    victim.kill_hard()
    wait_for(lambda: worker_up(watcher_port).get(victim.hostname) == 0.0, timeout=10)
    # Down within down_after plus one beat, not after some purge much later.
    assert time.monotonic() - killed_at < 2 + 0.5 + 2.0
    assert worker_up(watcher_port)[watcher.hostname] == 1.0
    time.sleep(1.0)  # and the down series stays, so an alert's `for:` can elapse
    assert worker_up(watcher_port).get(victim.hostname) == 0.0


def test_a_worker_stopped_cleanly_is_not_reported_down(
    start_worker: Callable[..., WorkerProcess], beat_metrics: Callable[..., int]
) -> None:
    watcher_port = beat_metrics(worker_down_after=2, worker_heartbeat_interval=0.5)
    start_worker([c.AI_QUEUE], env=FAST_LIVENESS)
    leaving = start_worker([c.SYNC_QUEUE], env={**FAST_LIVENESS, "METRICS_PORT": str(free_port())})
    wait_for(lambda: leaving.hostname in worker_up(watcher_port), timeout=30)
    leaving.stop()
    wait_for(lambda: leaving.hostname not in worker_up(watcher_port), timeout=10)
