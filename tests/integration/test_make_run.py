"""``make run`` starts a private Redis when none answers, a worker that answers ping and runs tasks,
and Ctrl-C stops it all."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import REPO, worker_env

pytestmark = pytest.mark.integration

APP = "personal_assistant.workers.celery_app"


# The seed's five beat tasks: each must succeed on a default install (nothing configured).
SEED_BEAT_TASKS = (
    "personal_assistant.workers.tasks.ai_tasks.process_due_ai_tasks",
    "personal_assistant.workers.tasks.email_tasks.process_email_queue",
    "personal_assistant.workers.tasks.file_tasks.cleanup_temp_files",
    "personal_assistant.workers.tasks.sync_tasks.sync_calendar_events",
    "personal_assistant.workers.tasks.maintenance_tasks.cleanup_old_logs",
)


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    """Environment of `make run` with a broker URL where nothing listens yet, and no DATA_DIR:
    the default (``var`` under the directory make run starts in, tmp_path here) applies."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = worker_env(url, {"WORKER_CONCURRENCY": "1"})
    for variable in ("DATA_DIR", "DATABASE_URL", "TEMP_DIRS", "LOG_DIRS"):
        env.pop(variable, None)
    return env


@pytest.fixture
def supervisor(run_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "personal_assistant.workers.cli.run_local"],
        env=run_env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    if process.poll() is None:  # the test failed midway: stop it as Ctrl-C does, then harder
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


def celery(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def celery_each(
    env: dict[str, str], commands: list[tuple[str, ...]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run several celery commands at once; their results in the order given."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: celery(env, *args), commands))


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
    assert (tmp_path / "var" / "assistant.db").is_file()  # the store, migrated on start

    # Each of the seed's beat tasks succeeds with nothing configured (no SMTP, feeds or model:
    # nothing to do, so nothing fails), on the default, relative DATA_DIR. The five commands run
    # side by side: each is a Python start-up of two seconds.
    calls = celery_each(run_env, [("call", name) for name in SEED_BEAT_TASKS])
    for name, done in zip(SEED_BEAT_TASKS, calls, strict=True):
        assert done.returncode == 0, f"{name}: {done.stderr}"
    results = celery_each(run_env, [("result", done.stdout.strip()) for done in calls])
    for name, result in zip(SEED_BEAT_TASKS, results, strict=True):
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "Traceback" not in result.stdout + result.stderr, name

    # The worker's main process dies (the OOM killer, say): make run starts it again.
    found = subprocess.check_output(["pgrep", "-P", str(supervisor.pid), "-f", "celery"])
    worker_pid = int(found.split()[0])
    os.kill(worker_pid, signal.SIGKILL)
    log = tmp_path / "run.log"
    wait_for(lambda: "killed by SIGKILL" in log.read_text(), timeout=30)
    assert "restarting in 1s" in log.read_text()
    wait_for(
        lambda: celery(run_env, "inspect", "ping", "--timeout", "2").returncode == 0,
        timeout=90,
        interval=1,
    )
    # Nothing of the killed worker is left: its pool child and its embedded beat went with it.
    assert subprocess.run(["pgrep", "-s", str(worker_pid)], check=False).returncode == 1

    supervisor.send_signal(signal.SIGINT)
    assert supervisor.wait(timeout=90) == 0
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    logged = log.read_text()
    assert "started a private Redis" in logged
    assert "stopped the private Redis" in logged
