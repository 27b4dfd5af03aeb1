"""What the alert channel tests send and where: a notification, loopback endpoints, and a
scripted channel that fails on demand and records what it was handed.

HTTP receivers are ``http.server`` instances; a "dead" endpoint (:class:`BlackHole`) is a socket
that accepts connections and never answers (the worst case: the sender waits for its whole
timeout). The fixtures that start them are in ``tests/unit/alerting/conftest.py``.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from personal_assistant.workers.alerting.channels.base import ChannelError, Notification

SECRET = "unit-test-webhook-secret-0123456789abcdef"  # noqa: S105 - a test secret (41 bytes)


def note(
    rule: str = "CeleryWorkerDown",
    state: str = "firing",
    fingerprint: str = "fp-1",
    **extra: Any,
) -> Notification:
    return Notification(
        rule=rule,
        state=state,
        severity=extra.pop("severity", "critical"),
        message=extra.pop("message", "worker w1 stopped sending heartbeats"),
        labels=extra.pop("labels", {"hostname": "w1"}),
        fields=extra.pop("fields", {"down_for_s": 125.5}),
        fingerprint=fingerprint,
        timestamp=extra.pop("timestamp", 1_700_000_000.0),
    )


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived


class HttpReceiver:
    """A real HTTP server on 127.0.0.1 that records POSTs and answers ``status``."""

    def __init__(self, status: int = 200, reply: bytes = b"ok") -> None:
        self.status = status
        self.reply = reply
        self.location = ""
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._cond:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    receiver._cond.notify_all()
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} of {count} requests in {timeout}s")
            return list(self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


class BlackHole:
    """Accepts TCP connections (the kernel's backlog does) and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.sock.close()


class ScriptedChannel:
    """A channel failing ``fail_times`` times (then succeeding), recording every attempt."""

    def __init__(
        self,
        name: str = "scripted",
        fail_times: int = 0,
        error: Exception | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.fail_times = fail_times
        self.error = error or ChannelError("boom")
        self.gate = gate
        self.attempts: list[tuple[str, float]] = []
        self.delivered: list[Notification] = []
        self._lock = threading.Lock()

    def send(self, n: Notification) -> None:
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        with self._lock:
            self.attempts.append((n.fingerprint, time.monotonic()))
            if len(self.attempts) <= self.fail_times:
                raise self.error
            self.delivered.append(n)
