"""Beat records its liveness each tick, and the beat health check reads it."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import constants as c
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess, worker_env

pytestmark = pytest.mark.integration


def health(redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "personal_assistant.workers.monitoring.health_check",
            "beat",
            "--max-age",
            "60",
        ],
        env=worker_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_running_beat_is_healthy_and_a_silent_one_is_not(
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    assert health(redis_url).returncode == 1  # never ticked
    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "personal_assistant.workers.celery_app",
            "beat",
            "--schedule",
            str(tmp_path / "schedule"),
            "-l",
            "info",
        ],
        env=worker_env(redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: redis_client.get("pa:beat:last_tick"), timeout=30)
        assert health(redis_url).returncode == 0
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    redis_client.set("pa:beat:last_tick", "1000.0")  # a beat silent since 1970
    stale = health(redis_url)
    assert stale.returncode == 1
    assert "beat" in (stale.stdout + stale.stderr).lower()


def test_beat_exports_its_last_tick_for_the_no_beat_tick_alert_and_workers_do_not(
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
    beat_metrics: Callable[..., int],
) -> None:
    worker_port = free_port()
    start_worker([c.MAINTENANCE_QUEUE], env={"METRICS_PORT": str(worker_port)})
    with urllib.request.urlopen(f"http://127.0.0.1:{worker_port}/metrics", timeout=10) as reply:
        from_worker = reply.read().decode().splitlines()
    assert not [line for line in from_worker if line.startswith("celery_beat_last_tick")]
    url = f"http://127.0.0.1:{beat_metrics()}/metrics"
    redis_client.set("pa:beat:last_tick", "1764345600.5")
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    assert "celery_beat_last_tick_timestamp_seconds 1.7643456005e+09" in lines
