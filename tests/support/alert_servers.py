"""Loopback servers that receive alerts: SMTP (aiosmtpd) and HTTP (Slack, signed webhooks)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from personal_assistant.workers.alerting.channels.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)

# The shared secret of the webhook receiver the tests start (conftest.py: ``webhook``); at
# least WEBHOOK_MIN_SECRET_BYTES (32) bytes, as channels require.
WEBHOOK_SECRET = "loopback-webhook-secret-for-the-test-suite"  # noqa: S105 - a test secret


class Mailbox:
    """aiosmtpd handler and authenticator: keeps accepted messages and login attempts."""

    def __init__(self, user: str = "", password: str = "") -> None:
        self.user, self.password = user, password
        self.messages: list[tuple[Envelope, EmailMessage]] = []
        self.logins: list[tuple[str, bool]] = []
        self.received = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        self.received.set()
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.user.encode()
            and data.password == self.password.encode()
        )
        self.logins.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)


class LoopbackSMTP(Controller):
    """aiosmtpd on 127.0.0.1 with an ephemeral port (Controller alone wants a fixed one)."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, **kwargs)

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _create_server(self) -> Any:
        return self._bind()


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool
    received_at: float = 0.0


class Receiver:
    """http.server on 127.0.0.1; with ``secret``, it verifies X-Signature-256 over
    X-Alert-Timestamp and the body, and the timestamp's freshness, as a real receiver would
    (``verify_signature``; 401 if either fails)."""

    def __init__(self, secret: str | None = None) -> None:
        self.hits: list[Hit] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                valid = False
                if secret is not None:
                    valid = verify_signature(
                        body,
                        self.headers.get(SIGNATURE_HEADER),
                        secret,
                        self.headers.get(TIMESTAMP_HEADER),
                    )
                with receiver.arrived:
                    receiver.hits.append(
                        Hit(self.path, dict(self.headers.items()), body, valid, time.time())
                    )
                    receiver.arrived.notify_all()
                status = 401 if secret is not None and not valid else 200
                reply = b"bad signature" if status == 401 else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

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

    def wait(self, count: int, timeout: float = 10.0) -> list[Hit]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.hits) >= count, timeout)
            return list(self.hits)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
