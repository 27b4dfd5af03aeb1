"""A loopback SMTP server for the e-mail outbox tests: it receives mail like a real server and
answers chosen recipients with chosen replies (4xx, 5xx, a stall), and a self-signed
certificate for its STARTTLS and implicit TLS.

The server is aiosmtpd (``LoopbackSMTP`` of alert_servers.py, on an ephemeral port); the
handler keeps each accepted message's raw bytes and Message-ID, so tests count exactly which
messages arrived and how many times.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import gc
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.alert_servers import LoopbackSMTP

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    message_id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    #: When the server accepted it (time.perf_counter of this process).
    at: float = 0.0

    def parsed(self) -> EmailMessage:
        """The whole message, parsed."""
        message = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


class OutboxMailbox:
    """aiosmtpd handler (and authenticator) with scripted replies per recipient.

    ``rcpt_replies``: recipient -> reply to its RCPT TO (e.g. ``"550 5.1.1 no such user"``);
    ``data_replies``: recipient -> reply after DATA of a message to it (e.g. ``"451 4.3.0 try
    later"``); ``stall``: recipients whose DATA is answered only after ``stall_seconds`` (a
    server that hangs, for timeouts). Everything else is accepted with 250.
    """

    def __init__(
        self,
        *,
        rcpt_replies: Mapping[str, str] | None = None,
        data_replies: Mapping[str, str] | None = None,
        stall: frozenset[str] = frozenset(),
        stall_seconds: float = 5.0,
        pace_seconds: float = 0.0,
        user: str = "",
        password: str = "",
    ) -> None:
        self.rcpt_replies = dict(rcpt_replies or {})
        self.data_replies = dict(data_replies or {})
        self.stall = stall
        self.stall_seconds = stall_seconds
        # Time each message takes to be accepted (other connections go on meanwhile): a drain
        # that lasts long enough for every worker to take part, however busy the machine.
        self.pace_seconds = pace_seconds
        self.user, self.password = user, password
        self.received: list[Received] = []
        self.logins: list[bool] = []
        self.connections = 0
        self._arrived = threading.Condition()
        self._target: int | None = None

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        session.host_name = hostname
        if not session.ssl:  # count sessions once: a STARTTLS session says EHLO twice
            with self._arrived:
                self.connections += 1
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.pace_seconds:
            await asyncio.sleep(self.pace_seconds)
        for address in envelope.rcpt_tos:
            if address in self.stall:
                await asyncio.sleep(self.stall_seconds)
            if address in self.data_replies:
                return self.data_replies[address]
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        # A regular expression, not a parser: the benchmark's server must cost little per
        # message, and the outbox writes this header on one line.
        found = _MESSAGE_ID.search(raw.split(b"\r\n\r\n", 1)[0])
        with self._arrived:
            self.received.append(
                Received(
                    message_id=found.group(1).decode() if found else "",
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    raw=raw,
                    at=time.perf_counter(),
                )
            )
            # Wake a waiter only when its count is reached: a wake-up per message would take
            # the interpreter lock from this server thread a thousand times a second.
            if self._target is not None and len(self.received) >= self._target:
                self._arrived.notify_all()
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.user.encode()
            and data.password == self.password.encode()
        )
        self.logins.append(ok)
        return AuthResult(success=ok, handled=False)

    def wait(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until ``count`` messages arrived; return them all (fails after ``timeout``)."""
        with self._arrived:
            self._target = count
            try:
                arrived = self._arrived.wait_for(lambda: len(self.received) >= count, timeout)
            finally:
                self._target = None
            assert arrived, f"{len(self.received)} of {count} messages arrived in {timeout}s"
            return list(self.received)

    def copies(self) -> Counter[str]:
        """How many times each Message-ID arrived."""
        with self._arrived:
            return Counter(r.message_id for r in self.received)


@contextmanager
def smtp_server(handler: OutboxMailbox, **kwargs: Any) -> Iterator[LoopbackSMTP]:
    """aiosmtpd on 127.0.0.1 with ``handler`` (``kwargs`` go to aiosmtpd's Controller)."""
    controller = LoopbackSMTP(handler, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()
        # aiosmtpd's stop leaves the transports of client connections still open (a worker's
        # sweep between messages) to the garbage collector, whose ResourceWarning would fail
        # whichever test runs next: collect them here, where they are expected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
