"""The worker's readiness probes and the containers' healthchecks.

The HTTP server itself (/metrics, /healthz, /readyz) is ``health_server.HealthServer``,
re-exported here. The probes answer "ok" or "not ok" for the broker and the result backend
without naming a host, port, database or URL: anyone who reaches the port reads them.

Healthchecks for Compose / Kubernetes::

    python -m personal_assistant.workers.monitoring.health_check beat --max-age 120
    python -m personal_assistant.workers.monitoring.health_check worker --port 9808

The beat check reads the scheduler's last tick from Redis. It must not be ``celery inspect
ping``: that pings *workers* and says nothing about beat.
"""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

import redis
from kombu.connection import Connection

from personal_assistant.workers import constants as c
from personal_assistant.workers.config import ConfigError, is_redis_url, load_settings, mask_url
from personal_assistant.workers.monitoring.health_server import Check, HealthServer
from personal_assistant.workers.monitoring.liveness import BeatLiveness
from personal_assistant.workers.redis_clients import probe_client

__all__ = ["Check", "HealthServer", "backend_ready", "broker_ready", "main"]

logger = logging.getLogger(__name__)

# Every probe tries once within this (constants.py says why); beat's check allows twice as long.
PROBE_TIMEOUT_S = c.REDIS_PROBE_TIMEOUT_S


# --- Readiness probes -----------------------------------------------------------------------

# Readiness answers say "ok" or "not ok" and the kind of failure: whoever can reach the port
# learns nothing of the broker's host, port, database or credentials. The log has the details.


def _not_ok(what: str, url: str, exc: Exception) -> tuple[bool, str]:
    logger.warning("readiness: %s %s unreachable: %s", what, mask_url(url), mask_url(str(exc)))
    return False, f"{what}: not ok ({type(exc).__name__})"


def _redis_ping(url: str, what: str) -> tuple[bool, str]:
    client = probe_client(url, PROBE_TIMEOUT_S)
    try:
        client.ping()
    except Exception as exc:
        return _not_ok(what, url, exc)
    finally:
        client.close()
    return True, f"{what}: ok"


def broker_ready(url: str) -> tuple[bool, str]:
    """Whether the broker answers within a second: ``broker: ok`` or ``broker: not ok (...)``.

    Redis URLs get a PING; other brokers (AMQP) a kombu connection attempt.
    """
    if is_redis_url(url):
        return _redis_ping(url, "broker")
    conn = Connection(url, connect_timeout=PROBE_TIMEOUT_S)
    try:
        conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:
        return _not_ok("broker", url, exc)
    finally:
        conn.release()
    return True, "broker: ok"


def backend_ready(url: str) -> tuple[bool, str]:
    """Whether the result backend answers within a second (Redis backends are pinged)."""
    if is_redis_url(url):
        return _redis_ping(url, "result backend")
    if url.startswith("rpc://"):
        return True, "result backend: ok (the broker)"
    return True, "result backend: not probed (not Redis)"


# --- Healthcheck CLI ------------------------------------------------------------------------


def _check_beat(max_age: float) -> tuple[int, str]:
    try:
        url = load_settings().celery_broker_url
    except ConfigError as exc:
        return 1, f"UNHEALTHY: {exc}"
    client = probe_client(url, PROBE_TIMEOUT_S * 2)
    try:
        liveness = BeatLiveness(client)
        age = liveness.age()
    except redis.RedisError as exc:
        return 1, f"UNHEALTHY: cannot read beat's last tick from {mask_url(url)}: {exc}"
    finally:
        client.close()
    if age is None:
        return 1, f"UNHEALTHY: beat has never ticked ({liveness.key} missing in {mask_url(url)})"
    if age > max_age:
        return 1, f"UNHEALTHY: beat last ticked {age:.0f}s ago (limit {max_age:g}s)"
    return 0, f"ok: beat ticked {age:.1f}s ago"


def _default_address() -> tuple[str, int]:
    try:
        settings = load_settings()
    except ConfigError:
        return "127.0.0.1", c.METRICS_PORT
    return settings.metrics_host, settings.metrics_port


def _probe_host(host: str) -> str:
    """Where to reach a server listening on ``host``: all interfaces are reached on loopback."""
    if host in {"", "0.0.0.0"}:  # noqa: S104 - a comparison, not a bind
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _check_worker(host: str, port: int, timeout: float) -> tuple[int, str]:
    netloc = f"[{host}]" if ":" in host else host
    url = f"http://{netloc}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace").strip()
            return 0, f"ok: {body}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        return 1, f"UNHEALTHY ({exc.code}): {body}"
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        return 1, f"UNHEALTHY: no health endpoint at {url}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one healthcheck; 0 healthy, 1 unhealthy (Docker reserves 2), message on stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m personal_assistant.workers.monitoring.health_check",
        description="Container healthchecks of the workers and of beat.",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    beat = sub.add_parser("beat", help="beat ticked recently (reads Redis; not inspect ping)")
    beat.add_argument("--max-age", type=float, default=120.0, help="seconds (default 120)")
    worker = sub.add_parser("worker", help="the worker's /healthz answers 200")
    worker.add_argument("--port", type=int, default=None, help="default METRICS_PORT or 9808")
    worker.add_argument(
        "--host", default=None, help="default METRICS_HOST (loopback when it is 0.0.0.0)"
    )
    worker.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    if args.what == "beat":
        code, message = _check_beat(args.max_age)
    else:
        default_host, default_port = _default_address()
        host = _probe_host(default_host if args.host is None else args.host)
        port = default_port if args.port is None else args.port
        code, message = _check_worker(host, port, args.timeout)
    print(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
