"""The worker's /metrics, /healthz, /readyz server: what it serves, where, and to how many."""

from __future__ import annotations

import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from personal_assistant.workers import constants as c
from personal_assistant.workers.monitoring.health_server import HealthServer
from tests.support.waiting import wait_for


class Switch:
    """A check whose answer the test flips."""

    def __init__(self, ok: bool = True, reason: str = "ok") -> None:
        self.ok = ok
        self.reason = reason

    def __call__(self) -> tuple[bool, str]:
        return self.ok, self.reason


def get(port: int, path: str) -> tuple[int, str, str]:
    """Status, content type and body of GET http://127.0.0.1:port/path (errors included)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return (
                response.status,
                response.headers["Content-Type"],
                response.read().decode(),
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends before closing (a socket timeout fails the test)."""
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def connection_threads() -> int:
    """Threads serving a connection right now (socketserver names them after their target)."""
    return sum("process_request_thread" in t.name for t in threading.enumerate())


@pytest.fixture
def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("pa_test_things", "Things counted by the test.", ["kind"], registry=registry).labels(
        kind="widget"
    ).inc(3)
    return registry


@pytest.fixture
def checks() -> tuple[Switch, Switch]:
    return Switch(), Switch()


@pytest.fixture
def server(
    metrics_registry: CollectorRegistry, checks: tuple[Switch, Switch]
) -> Iterator[HealthServer]:
    liveness, readiness = checks
    srv = HealthServer(
        0, registry=metrics_registry, liveness=liveness, readiness=readiness, host="127.0.0.1"
    )
    srv.start()
    yield srv
    srv.stop()


def bound(server: HealthServer) -> int:
    assert server.port is not None
    return server.port


# --- what it serves ---------------------------------------------------------------------------


def test_metrics_are_served_from_the_given_registry(server: HealthServer) -> None:
    status, content_type, body = get(bound(server), "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    assert 'pa_test_things_total{kind="widget"} 3.0' in body
    assert "process_cpu_seconds_total" not in body  # only the fresh registry, not the default


def test_healthz_and_readyz_follow_their_checks(
    server: HealthServer, checks: tuple[Switch, Switch]
) -> None:
    liveness, readiness = checks
    port = bound(server)
    assert get(port, "/healthz")[::2] == (200, "ok\n")
    assert get(port, "/readyz")[::2] == (200, "ok\n")

    liveness.ok, liveness.reason = False, "consumer loop has not moved for 400s"
    assert get(port, "/healthz")[::2] == (503, "consumer loop has not moved for 400s\n")
    assert get(port, "/readyz")[0] == 200  # independent

    readiness.ok, readiness.reason = False, "broker: not ok (ConnectionError)"
    assert get(port, "/readyz")[::2] == (503, "broker: not ok (ConnectionError)\n")


def test_a_check_that_raises_is_a_503_naming_the_error_type_but_not_its_text(
    metrics_registry: CollectorRegistry,
) -> None:
    def broken() -> tuple[bool, str]:
        raise redis.ConnectionError("Error 111 connecting to broker.internal:6379. Refused.")

    srv = HealthServer(
        0, registry=metrics_registry, liveness=broken, readiness=broken, host="127.0.0.1"
    )
    port = srv.start()
    try:
        status, _, body = get(port, "/readyz")
        assert (status, body) == (503, "readiness check raised ConnectionError\n")
        assert get(port, "/metrics")[0] == 200  # the server still serves
    finally:
        srv.stop()


def test_unknown_paths_are_404_and_queries_are_ignored(server: HealthServer) -> None:
    port = bound(server)
    assert get(port, "/")[0] == 404
    assert get(port, "/metricsx")[0] == 404
    assert get(port, "/metrics?name[]=pa_test_things_total")[0] == 200
    assert get(port, "/healthz/")[0] == 200


def test_requests_write_nothing_to_stderr(
    server: HealthServer, capfd: pytest.CaptureFixture[str]
) -> None:
    port = bound(server)
    for path in ("/metrics", "/healthz", "/nope"):
        get(port, path)
    assert capfd.readouterr().err == ""


# --- binding --------------------------------------------------------------------------------


def test_it_listens_on_loopback_unless_told_otherwise(metrics_registry: CollectorRegistry) -> None:
    srv = HealthServer(0, registry=metrics_registry, liveness=Switch(), readiness=Switch())
    srv.start()
    try:
        assert srv.listening_socket is not None
        assert srv.listening_socket.getsockname()[0] == "127.0.0.1"
    finally:
        srv.stop()


def test_a_port_in_use_is_a_clear_error(metrics_registry: CollectorRegistry) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = HealthServer(
            port,
            registry=metrics_registry,
            liveness=Switch(),
            readiness=Switch(),
            host="127.0.0.1",
        )
        with pytest.raises(OSError, match=rf"port {port} is already in use.*METRICS_PORT"):
            srv.start()
    assert srv.port is None


def test_an_address_that_is_not_this_machines_is_a_clear_error(
    metrics_registry: CollectorRegistry,
) -> None:
    srv = HealthServer(
        0, registry=metrics_registry, liveness=Switch(), readiness=Switch(), host="192.0.2.1"
    )
    with pytest.raises(OSError, match=r"cannot serve metrics on 192\.0\.2\.1:0 \(METRICS_HOST"):
        srv.start()


def test_stop_releases_the_port_and_start_is_idempotent(
    metrics_registry: CollectorRegistry,
) -> None:
    srv = HealthServer(
        0, registry=metrics_registry, liveness=Switch(), readiness=Switch(), host="127.0.0.1"
    )
    port = srv.start()
    assert srv.start() == port
    srv.stop()
    srv.stop()
    again = HealthServer(
        port, registry=metrics_registry, liveness=Switch(), readiness=Switch(), host="127.0.0.1"
    )
    assert again.start() == port
    again.stop()


# --- connections: a timeout each, a cap on how many -------------------------------------------


def test_the_limits_default_to_the_documented_constants(
    metrics_registry: CollectorRegistry,
) -> None:
    srv = HealthServer(0, registry=metrics_registry, liveness=Switch(), readiness=Switch())

    assert srv.connection_timeout == c.HEALTH_CONNECTION_TIMEOUT_S
    assert srv.max_connections == c.HEALTH_MAX_CONNECTIONS


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(
    metrics_registry: CollectorRegistry,
) -> None:
    srv = HealthServer(
        0,
        registry=metrics_registry,
        liveness=Switch(),
        readiness=Switch(),
        connection_timeout=0.2,
    )
    port = srv.start()
    try:
        # Without a server-side timeout, recv would wait the 10 s and raise instead.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            assert read_to_eof(idle) == b""
        wait_for(lambda: connection_threads() == 0, timeout=5)
    finally:
        srv.stop()


def test_past_the_cap_connections_get_a_503_at_once_and_threads_stay_bounded(
    metrics_registry: CollectorRegistry,
) -> None:
    cap = 3
    srv = HealthServer(
        0,
        registry=metrics_registry,
        liveness=Switch(),
        readiness=Switch(),
        max_connections=cap,
        connection_timeout=30,
    )
    port = srv.start()
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(cap)]
    try:
        wait_for(lambda: connection_threads() == cap, timeout=5)
        for _ in range(40):  # held sockets used to cost a thread each, never reclaimed
            with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                reply = read_to_eof(extra)
            assert reply.startswith(b"HTTP/1.0 503 Service Unavailable\r\n")
            assert reply.endswith(b"\r\n\r\ntoo many connections; try again\n")
        assert connection_threads() == cap

        held.pop().close()  # a slot freed is served again
        assert wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=5)
    finally:
        for sock in held:
            sock.close()
        srv.stop()


def test_a_request_sent_past_the_cap_still_reads_the_503(
    metrics_registry: CollectorRegistry,
) -> None:
    srv = HealthServer(
        0,
        registry=metrics_registry,
        liveness=Switch(),
        readiness=Switch(),
        max_connections=1,
        connection_timeout=30,
    )
    port = srv.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            wait_for(lambda: connection_threads() == 1, timeout=5)
            assert get(port, "/healthz")[::2] == (503, "too many connections; try again\n")
    finally:
        srv.stop()


# --- pool children ----------------------------------------------------------------------------


def socket_inodes_held_by_a_child(server: HealthServer) -> set[int]:
    """Fork; in the child, call close_in_child and report the socket inodes it still holds."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only os calls and _exit
        try:
            os.close(read_end)
            server.close_in_child()
            held = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    held.append(target[len("socket:[") : -1])
            os.write(write_end, " ".join(held).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        report = answer.read().decode()
    os.waitpid(pid, 0)
    return {int(inode) for inode in report.split()}


def test_a_forked_child_holds_no_descriptor_of_the_listening_socket(
    server: HealthServer,
) -> None:
    listening = server.listening_socket
    assert listening is not None
    assert not listening.get_inheritable()  # close-on-exec: an exec'd child never gets it
    inode = os.fstat(listening.fileno()).st_ino

    assert inode not in socket_inodes_held_by_a_child(server)
    assert get(bound(server), "/healthz")[0] == 200  # the parent still serves
