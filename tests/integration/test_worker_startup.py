"""A worker's start, as a plain ``celery worker`` meets it: a node name another running worker
holds is refused in one line, a metrics port in use stops it in one line, and the banner shows a
passwordless broker URL as it is."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.monitoring.liveness import WorkerRegistry
from tests.support.redis_server import free_port
from tests.support.worker import REPO, WorkerProcess

pytestmark = pytest.mark.integration

TEST_APP = "tests.support.celery_test_app"


def run(worker: WorkerProcess, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``worker``'s command line with the given environment changes until it exits (a
    worker refused at start exits in seconds)."""
    return subprocess.run(
        worker.args,
        env={**worker.env, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def lines_naming(output: str, *words: str) -> list[str]:
    """The lines of ``output`` that contain every one of ``words``."""
    return [line for line in output.splitlines() if all(word in line for word in words)]


def test_a_worker_started_with_the_name_of_a_running_one_is_refused_in_one_line(
    start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    first = start_worker([c.AI_QUEUE])
    registry = WorkerRegistry(redis_client)
    [before] = [w for w in registry.workers() if w.hostname == first.hostname]

    second = run(first, {"METRICS_PORT": str(free_port())})

    assert second.returncode == 73, second.stdout + second.stderr
    output = second.stdout + second.stderr
    assert "Traceback" not in output
    refusals = lines_naming(output, f"a worker named {first.hostname} is already up")
    assert len(refusals) == 1
    assert f"pid {before.pid}, up since" in refusals[0]
    # The running worker is untouched: its registry entry still says when *it* started.
    [after] = [w for w in registry.workers() if w.hostname == first.hostname]
    assert (after.pid, after.started_at) == (before.pid, before.started_at)


def test_the_banner_shows_a_broker_url_without_a_password_as_it_is(
    start_worker: Callable[..., WorkerProcess], redis_url: str
) -> None:
    worker = start_worker([c.AI_QUEUE])

    banner = lines_naming(worker.log(), ".> transport:")
    assert len(banner) == 1
    assert banner[0].rstrip().endswith(f".> transport:   {redis_url}")
    assert ":**@" not in banner[0]


def test_a_metrics_port_in_use_stops_the_worker_with_one_line_naming_it(
    redis_url: str, tmp_path: Path
) -> None:
    worker = WorkerProcess(redis_url, [c.AI_QUEUE], log_dir=tmp_path, app=TEST_APP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        started = run(worker, {"METRICS_PORT": str(port)})

    output = started.stdout + started.stderr
    assert started.returncode == 78, output
    assert "Traceback" not in output
    assert len(lines_naming(output, f"port {port} is already in use", "METRICS_PORT")) == 1
    assert len(lines_naming(output, str(port))) == 1
