"""``make run``'s private Redis keeps its password in a 0600 config file, never on its argv."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from personal_assistant.workers.cli.run_local import PrivateRedis, broker_answers
from tests.support.redis_server import free_port, redis_server_binary

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
