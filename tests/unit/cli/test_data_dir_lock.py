"""One ``make run`` per data directory: a second is refused naming the holder, a lock whose
holder was killed is taken over, and another run's private Redis is not adopted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from personal_assistant.workers.cli.data_dir_lock import (
    EX_CANTCREAT,
    DataDirLock,
    RunRefused,
    private_redis_owner,
    read_holder,
)
from personal_assistant.workers.cli.private_redis import PrivateRedis
from tests.support.redis_server import free_port
from tests.support.worker import REPO

BROKER = "redis://:s3cret-pw@127.0.0.1:6390/0"  # never contacted: only written down

# A process that takes the lock, says so, then waits; with CHILD=1 it first starts a `sleep`
# holding the locked file, as make run's worker and Redis do.
HOLDER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from pathlib import Path
    from personal_assistant.workers.cli.data_dir_lock import DataDirLock
    lock = DataDirLock(Path(sys.argv[1]), sys.argv[2])
    lock.acquire()
    if os.environ.get("CHILD"):
        child = subprocess.Popen(["sleep", "30"], pass_fds=(lock.fd,))
        print(child.pid, flush=True)
        sys.exit(0)
    print(os.getpid(), flush=True)
    time.sleep(30)
    """
)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    """Holder processes started by a test, killed after it (their `sleep` children too)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def hold(
    holders: list[subprocess.Popen[str]], data_dir: Path, *, child: bool = False
) -> tuple[subprocess.Popen[str], int]:
    """Start a process holding ``data_dir``'s lock; it and the pid that holds the lock."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **({"CHILD": "1"} if child else {})}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), BROKER],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    holders.append(process)
    assert process.stdout is not None
    pid = int(process.stdout.readline())
    return process, pid


def test_a_second_run_on_the_data_dir_is_refused_in_one_line_naming_the_holder(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    _, pid = hold(holders, tmp_path / "var")

    with pytest.raises(RunRefused) as refused:
        DataDirLock(tmp_path / "var", "redis://127.0.0.1:1/0").acquire()

    message = str(refused.value)
    assert refused.value.exit_code == EX_CANTCREAT == 73
    assert len(message.splitlines()) == 1
    assert f"pid {pid} on " in message
    assert ", since 20" in message
    assert "broker redis://:****@127.0.0.1:6390/0" in message
    assert "s3cret" not in message


def test_a_lock_left_by_a_killed_run_is_taken_over_and_names_it(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    process, pid = hold(holders, tmp_path / "var")
    process.send_signal(signal.SIGKILL)
    process.wait()

    lock = DataDirLock(tmp_path / "var", "redis://127.0.0.1:1/0")
    stale = lock.acquire()
    try:
        assert stale is not None
        assert stale.pid == pid
        mine = read_holder(lock.path)
        assert mine is not None
        assert mine.pid == os.getpid()
        assert mine.broker == "redis://127.0.0.1:1/0"
    finally:
        lock.release()


def test_a_run_that_released_its_lock_leaves_nothing_to_take_over(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path / "var", BROKER)
    assert first.acquire() is None
    first.release()

    second = DataDirLock(tmp_path / "var", BROKER)
    try:
        assert second.acquire() is None
    finally:
        second.release()


def test_processes_a_dead_run_started_keep_its_data_dir_locked_and_are_named(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    process, child = hold(holders, tmp_path / "var", child=True)
    process.wait()  # the "run" exited; its child still holds the file
    try:
        with pytest.raises(RunRefused) as refused:
            DataDirLock(tmp_path / "var", BROKER).acquire()
        message = str(refused.value)
        assert "has exited" in message
        assert f"pid {child}" in message
        assert len(message.splitlines()) == 1
    finally:
        os.kill(child, signal.SIGKILL)


def test_another_runs_private_redis_is_recognised_and_its_own_run_is_not_refused(
    tmp_path: Path,
) -> None:
    owner_dir = tmp_path / "first" / "var"
    lock = DataDirLock(owner_dir, BROKER)
    lock.acquire()
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = PrivateRedis(url, owner_dir)
    server.start()
    try:
        owner = private_redis_owner(url, tmp_path / "second" / "var")
        assert owner is not None
        found_dir, holder = owner
        assert found_dir == owner_dir.resolve()
        assert holder is not None
        assert holder.pid == os.getpid()

        assert private_redis_owner(url, owner_dir) is None  # the run that started it
    finally:
        server.stop()
        lock.release()


def test_a_private_redis_whose_run_is_gone_or_any_other_redis_has_no_owner(
    tmp_path: Path, redis_url: str
) -> None:
    assert private_redis_owner(redis_url, tmp_path / "var") is None  # not started by make run
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = PrivateRedis(url, tmp_path / "gone" / "var")  # nobody holds that data dir
    server.start()
    try:
        assert private_redis_owner(url, tmp_path / "var") is None
    finally:
        server.stop()
