"""A worker checks its Redis at start: without AOF it warns, and in production it refuses."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.safety import EXIT_CONFIG
from tests.support.redis_server import free_port
from tests.support.worker import APP, WorkerProcess, worker_env

pytestmark = pytest.mark.integration


def test_a_worker_on_a_redis_without_aof_warns_and_serves(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # The test Redis runs with appendonly no, as a developer's often does.
    worker = start_worker([c.FILE_QUEUE], env={"METRICS_PORT": str(free_port())})

    assert "Redis runs without AOF persistence" in worker.log()
    assert worker.process is not None and worker.process.poll() is None


def test_a_production_worker_refuses_a_redis_without_aof_with_one_line(redis_url: str) -> None:
    env = worker_env(redis_url, {"ENVIRONMENT": "production", "METRICS_PORT": str(free_port())})
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "worker", "-Q", c.FILE_QUEUE, "-c", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == EXIT_CONFIG
    lines = [line for line in done.stderr.splitlines() if "personal_assistant.workers:" in line]
    assert len(lines) == 1
    assert "appendonly yes" in lines[0]
    assert "Traceback" not in done.stderr
