"""The worker's HTTP endpoint (/metrics, /healthz, /readyz) and the containers' healthchecks.

One small threaded HTTP server per worker *main* process (never per pool child: a per-child
server would export a fraction of the truth). Liveness and readiness are callables supplied by
the caller, so this module knows nothing about Celery.

Healthchecks for Compose / Kubernetes::

    python -m personal_assistant.workers.utils.health_check beat --max-age 120
    python -m personal_assistant.workers.utils.health_check worker --port 9808

The beat check reads the scheduler's last tick from Redis. It must not be ``celery inspect
ping``: that pings *workers* and says nothing about beat.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import redis
from kombu.connection import Connection
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from redis.backoff import NoBackoff
from redis.retry import Retry

from personal_assistant.workers import constants as c
from personal_assistant.workers.config import ConfigError, is_redis_url, load_settings, mask_url
from personal_assistant.workers.utils.task_monitoring import BeatLiveness

logger = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]
PROBE_TIMEOUT_S = 1.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung scrape must not keep the worker from exiting
    block_on_close = False


def _run_check(check: Check, what: str) -> tuple[bool, str]:
    try:
        ok, reason = check()
    except Exception as exc:  # a broken check is a failed check, not a crashed server
        logger.exception("%s check raised", what)
        return False, f"{what} check raised {type(exc).__name__}: {exc}"
    return bool(ok), str(reason)


def _handler(
    registry: CollectorRegistry, liveness: Check, readiness: Check
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pa-workers-health"
        sys_version = ""

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _check(self, check: Check, what: str) -> None:
            ok, reason = _run_check(check, what)
            text = "ok" if ok and not reason else reason
            self._reply(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            if path == "/metrics":
                try:
                    body = generate_latest(registry)
                except Exception as exc:
                    logger.exception("collecting metrics failed")
                    msg = f"collecting metrics failed: {type(exc).__name__}: {exc}\n"
                    self._reply(500, msg.encode(), "text/plain; charset=utf-8")
                    return
                self._reply(200, body, CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._check(liveness, "liveness")
            elif path == "/readyz":
                self._check(readiness, "readiness")
            else:
                body = b"not found: try /metrics, /healthz or /readyz\n"
                self._reply(404, body, "text/plain; charset=utf-8")

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a scrape every 15 s must not write a line to the worker's log."""

    return Handler


class HealthServer:
    """/metrics, /healthz and /readyz on one port, served from a daemon thread."""

    def __init__(
        self,
        port: int,
        *,
        registry: CollectorRegistry,
        liveness: Check,
        readiness: Check,
        host: str = "0.0.0.0",  # noqa: S104 - scraped from outside the container
    ) -> None:
        self.requested_port = port
        self.host = host
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port while running (the real one when started with port 0)."""
        return None if self._server is None else int(self._server.server_address[1])

    def start(self) -> int:
        """Bind and serve; return the bound port. A port in use raises OSError naming it."""
        if self._server is not None:
            return int(self._server.server_address[1])
        handler = _handler(self.registry, self.liveness, self.readiness)
        try:
            server = _Server((self.host, self.requested_port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(
                    exc.errno,
                    f"cannot serve metrics on {self.host}:{self.requested_port}: port "
                    f"{self.requested_port} is already in use (set METRICS_PORT to a free port; "
                    "each worker on one host needs its own)",
                ) from exc
            raise OSError(
                exc.errno,
                f"cannot serve metrics on {self.host}:{self.requested_port} "
                f"(METRICS_PORT): {exc.strerror or exc}",
            ) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"pa-health-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return int(server.server_address[1])

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)


# --- Readiness probes -----------------------------------------------------------------------


def _probe_client(url: str, timeout: float = PROBE_TIMEOUT_S) -> redis.Redis:
    """A client that tries once: redis-py's default retries with backoff take seconds."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def _redis_ping(url: str, what: str) -> tuple[bool, str]:
    client = _probe_client(url)
    try:
        client.ping()
    except Exception as exc:
        return False, f"{what} {mask_url(url)} unreachable: {mask_url(str(exc))}"
    finally:
        client.close()
    return True, f"{what} {mask_url(url)} answers"


def broker_ready(url: str) -> tuple[bool, str]:
    """Whether the broker answers within a second; the message never shows the password.

    Redis URLs get a PING; other brokers (AMQP) a kombu connection attempt.
    """
    if is_redis_url(url):
        return _redis_ping(url, "broker")
    conn = Connection(url, connect_timeout=PROBE_TIMEOUT_S)
    try:
        conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:
        return False, f"broker {mask_url(url)} unreachable: {mask_url(str(exc))}"
    finally:
        conn.release()
    return True, f"broker {mask_url(url)} answers"


def backend_ready(url: str) -> tuple[bool, str]:
    """Whether the result backend answers within a second (Redis backends are pinged)."""
    if is_redis_url(url):
        return _redis_ping(url, "result backend")
    if url.startswith("rpc://"):
        return True, "result backend rpc:// uses the broker"
    return True, f"result backend {mask_url(url)} not probed (not Redis)"


# --- Healthcheck CLI ------------------------------------------------------------------------


def _check_beat(max_age: float) -> tuple[int, str]:
    try:
        url = load_settings().celery_broker_url
    except ConfigError as exc:
        return 1, f"UNHEALTHY: {exc}"
    client = _probe_client(url, PROBE_TIMEOUT_S * 2)
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


def _default_port() -> int:
    try:
        return load_settings().metrics_port
    except ConfigError:
        return c.METRICS_PORT


def _check_worker(port: int, timeout: float) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}/healthz"
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
        prog="python -m personal_assistant.workers.utils.health_check",
        description="Container healthchecks of the workers and of beat.",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    beat = sub.add_parser("beat", help="beat ticked recently (reads Redis; not inspect ping)")
    beat.add_argument("--max-age", type=float, default=120.0, help="seconds (default 120)")
    worker = sub.add_parser("worker", help="the worker's /healthz answers 200")
    worker.add_argument("--port", type=int, default=None, help="default METRICS_PORT or 9808")
    worker.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    if args.what == "beat":
        code, message = _check_beat(args.max_age)
    else:
        port = _default_port() if args.port is None else args.port
        code, message = _check_worker(port, args.timeout)
    print(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
