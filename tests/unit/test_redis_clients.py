"""One Redis client per URL and process, one timeout and retry policy; probes try once."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from personal_assistant.workers import constants as c
from personal_assistant.workers import redis_clients
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for


@pytest.fixture(autouse=True)
def fresh_clients() -> Iterator[None]:
    """Each test starts and ends with no shared client."""
    redis_clients.close_all()
    yield
    redis_clients.close_all()


@pytest.fixture
def refused_url() -> str:
    """A Redis URL on a loopback port nothing listens on: every connect is refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def connect_attempts(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], int]:
    """How many times a connection to a URL's port was attempted (redis-py resolves the
    address before every connect)."""
    seen: list[Any] = []
    resolve = socket.getaddrinfo

    def counting(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(port)
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    return lambda url: sum(1 for port in seen if str(port) == url.rsplit(":", 1)[1].split("/")[0])


def test_the_same_url_gives_the_same_client(redis_url: str) -> None:
    assert redis_clients.client_for(redis_url) is redis_clients.client_for(redis_url)


def test_different_urls_give_different_clients(redis_url: str) -> None:
    other_database = redis_url.rsplit("/", 1)[0] + "/1"

    first, second = redis_clients.client_for(redis_url), redis_clients.client_for(other_database)

    assert first is not second
    first.set("where", "db0")
    assert second.get("where") is None


def test_the_shared_client_has_the_timeouts_and_retries_of_constants(redis_url: str) -> None:
    client = redis_clients.client_for(redis_url)
    options = client.connection_pool.connection_kwargs

    assert options["socket_timeout"] == c.REDIS_SOCKET_TIMEOUT_S
    assert options["socket_connect_timeout"] == c.REDIS_CONNECT_TIMEOUT_S
    assert client.get_retry() == Retry(
        ExponentialBackoff(cap=c.REDIS_RETRY_CAP_S, base=c.REDIS_RETRY_BASE_S),
        c.REDIS_RETRIES,
        supported_errors=(redis.ConnectionError, redis.TimeoutError),
    )


def test_the_shared_client_retries_a_refused_connection_as_constants_say(
    monkeypatch: pytest.MonkeyPatch, refused_url: str, connect_attempts: Callable[[str], int]
) -> None:
    # The backoff's length is not under test here, only the number of tries.
    monkeypatch.setattr(c, "REDIS_RETRY_BASE_S", 0.001)
    monkeypatch.setattr(c, "REDIS_RETRY_CAP_S", 0.001)
    client = redis_clients.client_for(refused_url)

    with pytest.raises(redis.ConnectionError):
        client.ping()

    assert connect_attempts(refused_url) == 1 + c.REDIS_RETRIES


def test_a_probe_client_tries_once_within_its_timeout(
    refused_url: str, connect_attempts: Callable[[str], int]
) -> None:
    probe = redis_clients.probe_client(refused_url, 0.25)
    try:
        with pytest.raises(redis.ConnectionError):
            probe.ping()
    finally:
        probe.close()

    assert connect_attempts(refused_url) == 1
    assert probe.connection_pool.connection_kwargs["socket_timeout"] == 0.25
    assert probe.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.25


def test_a_probe_client_defaults_to_the_probe_timeout_of_constants(redis_url: str) -> None:
    probe = redis_clients.probe_client(redis_url)
    try:
        assert probe.ping()
    finally:
        probe.close()

    assert probe.connection_pool.connection_kwargs["socket_timeout"] == c.REDIS_PROBE_TIMEOUT_S


def test_a_probe_client_is_never_shared(redis_url: str) -> None:
    first, second = redis_clients.probe_client(redis_url), redis_clients.probe_client(redis_url)
    try:
        assert first is not second
        assert redis_clients.client_for(redis_url) not in (first, second)
    finally:
        first.close()
        second.close()


def test_close_all_empties_the_cache_and_closes_the_connections(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = redis_clients.client_for(redis_url)
    connection_id = before.client_id()

    redis_clients.close_all()

    assert redis_clients.client_for(redis_url) is not before
    wait_for(
        lambda: connection_id not in {int(cl["id"]) for cl in redis_client.client_list()},
        timeout=5,
    )


def test_a_client_made_before_a_fork_works_in_the_child(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = redis_clients.client_for(redis_url)
    client.set("made-in", "parent")  # the parent's connection is open when it forks
    parent_connection = client.client_id()

    pid = os.fork()
    if pid == 0:  # the child: report through Redis and the exit code, never return to pytest
        code = 1
        try:
            client.set("child-connection", client.client_id())
            code = 0 if client.get("made-in") == b"parent" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    child_connection = int(redis_client.get("child-connection") or 0)
    assert child_connection not in (0, parent_connection)  # its own connection, not a copy
    assert client.client_id() == parent_connection  # and the parent's still serves the parent
