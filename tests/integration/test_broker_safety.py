"""A worker checks its Redis at start: without AOF it warns, and in production it refuses."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.safety import EXIT_CONFIG
from tests.support.redis_server import RedisServer, free_port
from tests.support.worker import APP, WorkerProcess, worker_env

pytestmark = pytest.mark.integration

# A throwaway password for a private test Redis (production refuses a Redis without one).
TEST_REDIS_PASSWORD = "k7Qp2-" + "long-random"


def test_a_worker_on_a_redis_without_aof_warns_and_serves(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # The test Redis runs with appendonly no, as a developer's often does.
    worker = start_worker([c.FILE_QUEUE], env={"METRICS_PORT": str(free_port())})

    assert "Redis runs without AOF persistence" in worker.log()
    assert worker.process is not None and worker.process.poll() is None


def test_a_production_worker_refuses_a_redis_without_aof_with_one_line(tmp_path: Path) -> None:
    # Production requires a Redis password (config/production.py): this Redis has one.
    server = RedisServer(tmp_path / "redis", password=TEST_REDIS_PASSWORD).start()
    try:
        done = run_production_worker(server.url)
    finally:
        server.stop()

    assert done.returncode == EXIT_CONFIG
    lines = [line for line in done.stderr.splitlines() if "personal_assistant.workers:" in line]
    assert len(lines) == 1
    assert "appendonly yes" in lines[0]
    assert "Traceback" not in done.stderr


def run_production_worker(redis_url: str) -> subprocess.CompletedProcess[str]:
    """Start a worker with ENVIRONMENT=production and wait for it to exit."""
    env = worker_env(redis_url, {"ENVIRONMENT": "production", "METRICS_PORT": str(free_port())})
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "worker", "-Q", c.FILE_QUEUE, "-c", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_production_worker_without_a_redis_password_stops_with_one_line(redis_url: str) -> None:
    done = run_production_worker(redis_url)

    assert done.returncode != 0
    assert "ENVIRONMENT=production needs a password in CELERY_BROKER_URL" in done.stderr
    assert "Traceback" not in done.stderr
