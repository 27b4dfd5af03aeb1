"""``make run`` starts a private Redis when none answers, a worker that answers ping and runs tasks,
and Ctrl-C stops it all; a second run beside it is refused in one line naming the first, and a
run killed with SIGKILL leaves nothing running and its lock to the next."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import pytest
import redis

from personal_assistant.workers.cli.data_dir_lock import is_locked
from personal_assistant.workers.cli.private_redis import broker_answers
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


# --- One run per data directory ------------------------------------------------------------------

MAKE_RUN = [sys.executable, "-m", "personal_assistant.workers.cli.run_local"]


def stop(process: subprocess.Popen[bytes]) -> int:
    """Stop a make run as Ctrl-C does (harder if it hangs); its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@pytest.fixture
def start_run(run_env: dict[str, str]) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    """Start make runs in given directories (their log: run.log there); stopped at the end."""
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(cwd: Path) -> subprocess.Popen[bytes]:
        cwd.mkdir(parents=True, exist_ok=True)
        log = (cwd / "run.log").open("wb")
        process = subprocess.Popen(
            MAKE_RUN, env=run_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        stop(process)
        log.close()


def children(pid: int, named: str) -> list[bytes]:
    """Pids of ``pid``'s children whose command line holds ``named``."""
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", named], capture_output=True, check=False)
    return found.stdout.split()


def refused_beside(env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    """Run make run in ``cwd`` expecting a refusal: its exit code and its stderr lines."""
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        MAKE_RUN, env=env, cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    return done.returncode, done.stderr.splitlines()


def test_a_second_make_run_is_refused_in_one_line_naming_the_first_and_its_redis_is_not_adopted(
    start_run: Callable[[Path], subprocess.Popen[bytes]],
    run_env: dict[str, str],
    tmp_path: Path,
) -> None:
    first = start_run(tmp_path / "first")
    wait_for(lambda: "started a private Redis" in (tmp_path / "first" / "run.log").read_text(), 30)
    url = run_env["CELERY_BROKER_URL"]

    # Beside it, on the same data directory: refused by the lock, naming the holder.
    code, lines = refused_beside(run_env, tmp_path / "first")
    assert code == 73
    assert len(lines) == 1
    assert (
        f"{tmp_path / 'first' / 'var'} is in use by another make run (pid {first.pid}" in lines[0]
    )
    assert ", since 20" in lines[0]
    assert f"broker {url})" in lines[0]

    # On another data directory with the same broker URL: the first's private Redis is not
    # taken as this run's broker (it would stop under this run when the first stops).
    code, lines = refused_beside(run_env, tmp_path / "second")
    assert code == 73
    assert len(lines) == 1
    assert f"is the private Redis of the make run in {tmp_path / 'first' / 'var'}" in lines[0]
    assert f"(pid {first.pid} on " in lines[0]

    assert stop(first) == 0
    assert "taking over" not in (tmp_path / "first" / "run.log").read_text()


def test_a_make_run_killed_with_sigkill_leaves_nothing_running_and_the_next_takes_over(
    start_run: Callable[[Path], subprocess.Popen[bytes]],
    run_env: dict[str, str],
    tmp_path: Path,
) -> None:
    killed = start_run(tmp_path)
    log = tmp_path / "run.log"
    worker_pid = int(wait_for(lambda: children(killed.pid, "celery"), timeout=30)[0])
    url = run_env["CELERY_BROKER_URL"]

    killed.kill()  # no shutdown code runs in the supervisor
    killed.wait()

    # Its Redis and worker were told to stop with it (and hold the data directory until then).
    wait_for(lambda: not Path(f"/proc/{worker_pid}").exists(), timeout=30, interval=0.2)
    wait_for(lambda: not broker_answers(url), timeout=30, interval=0.2)
    wait_for(lambda: not is_locked(tmp_path / "var" / "run.lock"), timeout=30, interval=0.2)
    log.rename(tmp_path / "killed.log")
    following = start_run(tmp_path)
    wait_for(lambda: "started a private Redis" in log.read_text(), 30)
    assert (
        f"taking over {tmp_path / 'var' / 'run.lock'} from make run pid {killed.pid}"
        in log.read_text()
    )
    assert stop(following) == 0
