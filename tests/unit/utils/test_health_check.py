"""The worker's /metrics, /healthz, /readyz server, readiness probes and container healthchecks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from personal_assistant.workers.utils import health_check
from personal_assistant.workers.utils.health_check import (
    HealthServer,
    backend_ready,
    broker_ready,
)
from personal_assistant.workers.utils.task_monitoring import BeatLiveness
from tests.support.redis_server import free_port
from tests.support.worker import worker_env

MODULE = "personal_assistant.workers.utils.health_check"


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
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


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

    readiness.ok, readiness.reason = False, "broker redis://:****@x:6379/0 unreachable"
    assert get(port, "/readyz")[::2] == (503, "broker redis://:****@x:6379/0 unreachable\n")


def test_a_check_that_raises_is_a_503_not_a_crash(
    metrics_registry: CollectorRegistry,
) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("check exploded")

    srv = HealthServer(
        0, registry=metrics_registry, liveness=broken, readiness=broken, host="127.0.0.1"
    )
    port = srv.start()
    try:
        status, _, body = get(port, "/healthz")
        assert status == 503
        assert "RuntimeError: check exploded" in body
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


# --- Readiness probes -------------------------------------------------------------------------


def test_broker_and_backend_ready_for_the_test_redis(redis_url: str) -> None:
    ok, message = broker_ready(redis_url)
    assert ok, message
    assert redis_url in message
    assert backend_ready(redis_url)[0]


def test_unreachable_redis_is_not_ready_and_the_password_is_masked() -> None:
    port = free_port()
    url = f"redis://:s3cr3t-pw@127.0.0.1:{port}/0"
    started = time.monotonic()
    ok, message = broker_ready(url)
    assert not ok
    assert "s3cr3t-pw" not in message
    assert f"redis://:****@127.0.0.1:{port}/0" in message
    assert "unreachable" in message
    ok, message = backend_ready(url.replace("redis://:", "redis://user:"))
    assert not ok
    assert "s3cr3t-pw" not in message
    assert "user:****@" in message
    assert time.monotonic() - started < 10


def test_non_redis_brokers_go_through_kombu() -> None:
    assert broker_ready("memory://")[0]
    url = f"amqp://guest:hunter2@127.0.0.1:{free_port()}//"
    ok, message = broker_ready(url)
    assert not ok
    assert "hunter2" not in message
    assert "guest:****@" in message
    assert backend_ready("rpc://")[0]


# --- Healthcheck CLI --------------------------------------------------------------------------


def healthcheck(
    redis_url: str, cwd: Path, *args: str, broker: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the healthcheck module as the container would."""
    return subprocess.run(
        [sys.executable, "-m", MODULE, *args],
        env=worker_env(broker or redis_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_beat_healthcheck_reads_the_last_tick(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    never = healthcheck(redis_url, tmp_path, "beat", "--max-age", "120")
    assert never.returncode == 1, never.stderr
    assert "never ticked" in never.stdout

    BeatLiveness(redis_client).tick()
    fresh = healthcheck(redis_url, tmp_path, "beat", "--max-age", "120")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert fresh.stdout.startswith("ok: beat ticked")

    BeatLiveness(redis_client).tick(now=time.time() - 300)
    stale = healthcheck(redis_url, tmp_path, "beat", "--max-age", "120")
    assert stale.returncode == 1
    assert "limit 120s" in stale.stdout


def test_beat_healthcheck_fails_when_redis_is_down(redis_url: str, tmp_path: Path) -> None:
    broker = f"redis://:pw-secret@127.0.0.1:{free_port()}/0"
    result = healthcheck(redis_url, tmp_path, "beat", broker=broker)
    assert result.returncode == 1
    assert "cannot read beat's last tick" in result.stdout
    assert "pw-secret" not in result.stdout + result.stderr


def test_worker_healthcheck_gets_healthz(
    redis_url: str, tmp_path: Path, server: HealthServer, checks: tuple[Switch, Switch]
) -> None:
    port = str(bound(server))
    healthy = healthcheck(redis_url, tmp_path, "worker", "--port", port)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr

    liveness, _ = checks
    liveness.ok, liveness.reason = False, "consumer stuck"
    sick = healthcheck(redis_url, tmp_path, "worker", "--port", port)
    assert sick.returncode == 1
    assert "UNHEALTHY (503): consumer stuck" in sick.stdout

    nobody = healthcheck(redis_url, tmp_path, "worker", "--port", str(free_port()))
    assert nobody.returncode == 1
    assert "no health endpoint" in nobody.stdout


def test_main_in_process(
    redis_url: str,
    redis_client: redis.Redis,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv("CELERY_BROKER_URL", redis_url)
    BeatLiveness(redis_client).tick()
    assert health_check.main(["beat", "--max-age", "60"]) == 0
    assert health_check.main(["beat", "--max-age", "-1"]) == 1
    out = capsys.readouterr().out
    assert "ok: beat ticked" in out
    assert "UNHEALTHY" in out
    with pytest.raises(SystemExit):
        health_check.main([])
