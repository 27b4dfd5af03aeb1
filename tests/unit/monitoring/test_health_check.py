"""Readiness probes that name no connection details, and the containers' healthchecks.

The HTTP server itself is tested in test_health_server.py.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from prometheus_client import CollectorRegistry

from personal_assistant.workers.monitoring import health_check
from personal_assistant.workers.monitoring.health_check import (
    HealthServer,
    backend_ready,
    broker_ready,
)
from personal_assistant.workers.monitoring.liveness import BeatLiveness
from tests.support.redis_server import free_port
from tests.support.worker import worker_env

MODULE = "personal_assistant.workers.monitoring.health_check"


class Switch:
    """A check whose answer the test flips."""

    def __init__(self, ok: bool = True, reason: str = "ok") -> None:
        self.ok = ok
        self.reason = reason

    def __call__(self) -> tuple[bool, str]:
        return self.ok, self.reason


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of GET http://127.0.0.1:port/path (errors included)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


@pytest.fixture
def checks() -> tuple[Switch, Switch]:
    return Switch(), Switch()


@pytest.fixture
def server(checks: tuple[Switch, Switch]) -> Iterator[HealthServer]:
    liveness, readiness = checks
    srv = HealthServer(0, registry=CollectorRegistry(), liveness=liveness, readiness=readiness)
    srv.start()
    yield srv
    srv.stop()


def bound(server: HealthServer) -> int:
    assert server.port is not None
    return server.port


# --- Readiness probes -------------------------------------------------------------------------


def connection_details(url: str) -> list[str]:
    """What /readyz must not show of a URL: scheme, host, port, database, credentials."""
    parts = urlsplit(url)
    found = [f"{parts.scheme}://", str(parts.hostname), str(parts.port), parts.path]
    return found + [secret for secret in (parts.username, parts.password) if secret]


def readiness_of(broker: str, backend: str) -> tuple[bool, str]:
    """Readiness as the worker composes it (utils/metrics_hook.py)."""
    results = [broker_ready(broker), backend_ready(backend)]
    return all(ok for ok, _ in results), "; ".join(message for _, message in results)


def test_broker_and_backend_ready_for_the_test_redis(redis_url: str) -> None:
    assert broker_ready(redis_url) == (True, "broker: ok")
    assert backend_ready(redis_url) == (True, "result backend: ok")


def test_readyz_names_no_host_port_database_or_url(redis_url: str) -> None:
    unreachable = f"redis://admin:s3cr3t-pw@127.0.0.1:{free_port()}/7"
    reachable = redis_url.rsplit("/", 1)[0] + "/5"
    for broker, backend, status in [(reachable, reachable, 200), (unreachable, reachable, 503)]:
        srv = HealthServer(
            0,
            registry=CollectorRegistry(),
            liveness=Switch(),
            readiness=functools.partial(readiness_of, broker, backend),
        )
        port = srv.start()
        try:
            got, body = get(port, "/readyz")
        finally:
            srv.stop()
        assert got == status, body
        assert "broker: " in body
        assert "result backend: ok" in body
        for detail in connection_details(broker) + connection_details(backend):
            assert detail not in body


def test_unreachable_redis_is_not_ready_and_only_the_log_says_where(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    url = f"redis://:s3cr3t-pw@127.0.0.1:{port}/3"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=MODULE):
        broker = broker_ready(url)
        backend = backend_ready(url.replace("redis://:", "redis://user:"))

    assert broker == (False, "broker: not ok (ConnectionError)")
    assert backend == (False, "result backend: not ok (ConnectionError)")
    assert f"redis://:****@127.0.0.1:{port}/3" in caplog.text
    assert "s3cr3t-pw" not in caplog.text
    assert time.monotonic() - started < 10


def test_non_redis_brokers_go_through_kombu() -> None:
    assert broker_ready("memory://") == (True, "broker: ok")
    url = f"amqp://guest:hunter2@127.0.0.1:{free_port()}//"
    ok, message = broker_ready(url)
    assert not ok
    assert message.startswith("broker: not ok (")
    for detail in ("hunter2", "guest", "127.0.0.1", "amqp"):
        assert detail not in message
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


@pytest.mark.parametrize("listening", ["0.0.0.0", "127.0.0.1"])  # noqa: S104 - a setting
def test_the_worker_healthcheck_finds_the_server_at_metrics_host(
    server: HealthServer,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    listening: str,
) -> None:
    clean_env.setenv("METRICS_HOST", listening)  # all interfaces are reached on loopback
    clean_env.setenv("METRICS_PORT", str(bound(server)))

    assert health_check.main(["worker"]) == 0
    assert health_check.main(["worker", "--host", "127.0.0.1"]) == 0
    assert capsys.readouterr().out == "ok: ok\nok: ok\n"
