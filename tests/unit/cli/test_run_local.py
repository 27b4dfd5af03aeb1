"""``make run``: its private Redis keeps its password in a 0600 config file, never on its argv,
and its supervisor restarts a worker that dies, backing off, and not one that stopped on purpose.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from personal_assistant.workers.cli import run_local
from personal_assistant.workers.cli.run_local import (
    PrivateRedis,
    Supervisor,
    broker_answers,
    describe_exit,
)
from personal_assistant.workers.config import WorkerSettings, load_settings
from tests.support.redis_server import free_port, redis_server_binary

# --- The private Redis and its password -----------------------------------------------------------


# Characters a redis.conf line or a URL would split on, so the quoting is tested too.
PASSWORD = 'pa ss"w\\rd/#@:x'  # noqa: S105 - the test's own server

PLAIN_PASSWORD = "plain-s3cret-pw"  # noqa: S105 - the test's own server

StartRedis = Callable[[str], PrivateRedis]


@pytest.fixture
def start_private_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start a PrivateRedis (a real redis-server) for a URL; each is stopped after the test."""
    redis_server_binary()  # a clear error when the binary is missing
    started: list[PrivateRedis] = []

    def start(url: str) -> PrivateRedis:
        server = PrivateRedis(url, tmp_path / f"data{len(started)}")
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def password_url(port: int, user: str = "") -> str:
    return f"redis://{user}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/0"


def command_line(server: PrivateRedis) -> str:
    assert server.process is not None
    raw = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
    return raw.replace(b"\0", b" ").decode()


def ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return bool(client.ping())
    finally:
        client.close()


@pytest.fixture
def recorded_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``redis-server`` first on PATH that writes its argv to a file, then runs the real one.

    redis-server soon rewrites its process title (``redis-server 127.0.0.1:port``), so its
    /proc/<pid>/cmdline shows the argv only during start-up; the file shows what ps showed then
    (and for as long as it runs with ``set-proc-title no``).
    """
    real = redis_server_binary()
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    argv_file = tmp_path / "argv"
    shim = shim_dir / "redis-server"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{argv_file}"\nexec "{real}" "$@"\n')
    shim.chmod(0o700)
    monkeypatch.setenv("PATH", f"{shim_dir}{os.pathsep}{os.environ['PATH']}")
    return argv_file


def test_the_password_is_not_on_the_command_line_but_the_server_requires_it(
    start_private_redis: StartRedis, recorded_argv: Path
) -> None:
    port = free_port()
    url = f"redis://:{PLAIN_PASSWORD}@127.0.0.1:{port}/0"
    server = start_private_redis(url)

    argv = recorded_argv.read_text()
    assert PLAIN_PASSWORD not in argv
    assert argv.splitlines() == [str(server.config_file.resolve())]
    assert PLAIN_PASSWORD not in command_line(server)
    assert ping(url)
    with pytest.raises(redis.AuthenticationError):
        ping(f"redis://127.0.0.1:{port}/0")


def test_a_password_with_spaces_quotes_and_url_delimiters_works(
    start_private_redis: StartRedis,
) -> None:
    port = free_port()
    start_private_redis(password_url(port))

    assert ping(password_url(port))
    with pytest.raises(redis.AuthenticationError):
        ping(f"redis://127.0.0.1:{port}/0")


def test_the_config_file_is_readable_by_its_owner_only_and_keeps_todays_settings(
    start_private_redis: StartRedis,
) -> None:
    port = free_port()
    server = start_private_redis(password_url(port))

    mode = stat.S_IMODE(server.config_file.stat().st_mode)
    assert mode == 0o600
    client = redis.Redis.from_url(password_url(port), socket_timeout=5, decode_responses=True)
    try:
        settings = {
            name: client.config_get(name)[name]
            for name in ("appendonly", "maxmemory-policy", "bind", "dir")
        }
    finally:
        client.close()
    assert settings == {
        "appendonly": "yes",
        "maxmemory-policy": "noeviction",
        "bind": "127.0.0.1 -::1",
        "dir": str(server.data_dir.resolve()),
    }


def test_a_user_in_the_url_can_log_in_with_the_password(
    start_private_redis: StartRedis,
) -> None:
    port = free_port()
    start_private_redis(password_url(port, user="alice"))

    assert ping(password_url(port, user="alice"))
    assert ping(password_url(port))  # the default user too


def test_stopping_removes_the_config_file_with_the_password(
    start_private_redis: StartRedis,
) -> None:
    server = start_private_redis(password_url(free_port()))
    assert "requirepass" in server.config_file.read_text()

    server.stop()

    assert not server.config_file.exists()


def test_a_link_planted_where_the_config_goes_is_replaced_not_followed(tmp_path: Path) -> None:
    server = PrivateRedis(password_url(free_port()), tmp_path / "data")
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    server.data_dir.mkdir(parents=True)
    server.config_file.symlink_to(target)

    server.write_config()

    assert target.read_text() == "untouched\n"
    assert not server.config_file.is_symlink()
    assert stat.S_IMODE(server.config_file.stat().st_mode) == 0o600


def test_a_broker_that_answers_ping_is_found(redis_url: str) -> None:
    assert broker_answers(redis_url)


def test_a_port_nobody_listens_on_is_no_broker_after_a_single_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    resolve = socket.getaddrinfo
    tries: list[object] = []

    def counting(host: object, service: object, *args: object, **kwargs: object) -> object:
        if service == port:
            tries.append(service)
        return resolve(host, service, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", counting)

    assert not broker_answers(f"redis://127.0.0.1:{port}/0")
    assert len(tries) == 1  # a probe: no retries with backoff before make run starts Redis


# --- The supervisor's restarts --------------------------------------------------------------------


FIRST_DELAY = 0.05
MAX_DELAY = 0.2

# Makes a supervisor whose "worker" is ``python -c`` exiting with the given code.
MakeSupervisor = Callable[[int], Supervisor]


@pytest.fixture
def starts(tmp_path: Path) -> Path:
    """The file each start of the stand-in worker appends one line to."""
    return tmp_path / "starts"


def start_count(starts: Path) -> int:
    return len(starts.read_text().splitlines()) if starts.exists() else 0


@pytest.fixture
def make_supervisor(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, starts: Path
) -> Iterator[MakeSupervisor]:
    """Supervisors with a tiny stand-in worker, short delays and no broker to start.

    ``run`` installs SIGINT and SIGTERM handlers; the test's own are put back afterwards.
    """
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    clean_env.setattr(run_local, "RESTART_FIRST_DELAY_S", FIRST_DELAY)
    clean_env.setattr(run_local, "RESTART_MAX_DELAY_S", MAX_DELAY)
    clean_env.setattr(Supervisor, "ensure_broker", lambda self: None)

    def make(exit_code: int) -> Supervisor:
        code = f"import sys; open({str(starts)!r}, 'a').write('start\\n'); sys.exit({exit_code})"

        def command(settings: WorkerSettings) -> list[str]:
            return [sys.executable, "-c", code]

        clean_env.setattr(run_local, "worker_command", command)
        settings = load_settings(celery_broker_url="memory://", data_dir=tmp_path / "data")
        return Supervisor(settings)

    yield make
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def stop_after(supervisor: Supervisor, sleeps: int) -> list[float]:
    """Replace the supervisor's back-off wait: record each delay, stop at the ``sleeps``-th."""
    delays: list[float] = []

    def record(seconds: float) -> bool:
        delays.append(seconds)
        return len(delays) >= sleeps

    supervisor._sleep = record  # type: ignore[method-assign]
    return delays


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
        (1, "exit code 1"),
        (0, "exit code 0"),
    ],
)
def test_an_exit_status_is_described_in_words(code: int, words: str) -> None:
    assert describe_exit(code) == words


def test_a_dying_worker_is_restarted_with_doubling_delays_up_to_the_cap(
    make_supervisor: MakeSupervisor, starts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = make_supervisor(3)
    delays = stop_after(supervisor, sleeps=4)

    with caplog.at_level(logging.WARNING, logger=run_local.logger.name):
        code = supervisor.run()

    assert code == 0  # stopped while waiting to restart
    assert start_count(starts) == 4
    assert delays == [FIRST_DELAY, 2 * FIRST_DELAY, MAX_DELAY, MAX_DELAY]
    restarts = [r.getMessage() for r in caplog.records if "restarting in" in r.getMessage()]
    assert len(restarts) == 4
    assert all("exited (exit code 3)" in message for message in restarts)


def test_a_worker_that_lived_long_enough_is_restarted_after_the_first_delay_again(
    make_supervisor: MakeSupervisor, starts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_local, "RESTART_STABLE_AFTER_S", 0.0)  # every run counts as stable
    supervisor = make_supervisor(1)
    delays = stop_after(supervisor, sleeps=3)

    assert supervisor.run() == 0
    assert start_count(starts) == 3
    assert delays == [FIRST_DELAY] * 3


@pytest.mark.parametrize("code", [2, 78])
def test_a_worker_that_exits_for_its_configuration_is_not_restarted(
    make_supervisor: MakeSupervisor, starts: Path, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = make_supervisor(code)
    delays = stop_after(supervisor, sleeps=1)

    with caplog.at_level(logging.ERROR, logger=run_local.logger.name):
        returned = supervisor.run()

    assert returned == code
    assert start_count(starts) == 1
    assert delays == []
    assert f"exited with {code} (configuration): not restarted" in caplog.text


def test_a_worker_that_stops_cleanly_ends_the_loop_with_success(
    make_supervisor: MakeSupervisor, starts: Path
) -> None:
    supervisor = make_supervisor(0)
    delays = stop_after(supervisor, sleeps=1)

    assert supervisor.run() == 0
    assert start_count(starts) == 1
    assert delays == []


def test_a_supervisor_told_to_stop_is_not_kept_waiting_by_the_back_off(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor(3)
    supervisor.stopping = True
    started = time.monotonic()

    assert supervisor._sleep(30.0) is True
    assert time.monotonic() - started < 1.0


def test_a_worker_dying_after_a_stop_request_is_not_restarted(
    make_supervisor: MakeSupervisor, starts: Path
) -> None:
    supervisor = make_supervisor(3)
    delays = stop_after(supervisor, sleeps=1)
    run_worker = supervisor._run_worker

    def run_then_ctrl_c(command: list[str]) -> tuple[int, float]:
        ended = run_worker(command)
        supervisor.stopping = True  # Ctrl-C arrived while the worker ran
        return ended

    supervisor._run_worker = run_then_ctrl_c  # type: ignore[method-assign]

    assert supervisor.run() == 0
    assert start_count(starts) == 1
    assert delays == []
