"""``make run`` starts a private Redis when none answers, a worker that answers ping and runs tasks,
and Ctrl-C stops it all."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import REPO, worker_env

pytestmark = pytest.mark.integration

APP = "personal_assistant.workers.celery_app"


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    """Environment of `make run` with a broker URL where nothing listens yet."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    return worker_env(url, {"DATA_DIR": str(tmp_path / "var"), "WORKER_CONCURRENCY": "1"})


@pytest.fixture
def supervisor(run_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "personal_assistant.workers.cli.run_local"],
        env=run_env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()
    log.close()


def celery(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_run_serves_ping_and_call_then_stops_cleanly_on_ctrl_c(
    supervisor: subprocess.Popen[bytes],
    run_env: dict[str, str],
    tmp_path: Path,
) -> None:
    url = run_env["CELERY_BROKER_URL"]
    wait_for(
        lambda: celery(run_env, "inspect", "ping", "--timeout", "2").returncode == 0,
        timeout=90,
        interval=1,
    )
    called = celery(run_env, "call", "personal_assistant.workers.tasks.ai_tasks.probe")
    assert called.returncode == 0, called.stderr
    task_id = called.stdout.strip()
    result = celery(run_env, "result", task_id)
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout.strip())["queue"] == "ai_tasks"
    assert (tmp_path / "var" / "redis").is_dir()  # the private broker keeps its data here

    supervisor.send_signal(signal.SIGINT)
    assert supervisor.wait(timeout=90) == 0
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    log = (tmp_path / "run.log").read_text()
    assert "started a private Redis" in log
    assert "stopped the private Redis" in log
