"""One SMTP connection that sends messages one by one and says what became of each.

:class:`SmtpSession` opens the connection (plain, STARTTLS or implicit TLS, a login when
SMTP_USERNAME is set, SMTP_TIMEOUT on every socket operation) and sends each message on it;
:meth:`SmtpSession.send` never raises for a message's own fate, it returns a :class:`Delivery`:

- ``sent``: the server took it (250 after DATA), perhaps refusing some of the recipients
  (``refused``): sending again would duplicate it for the others;
- ``deferred``: a 4xx reply, or the connection broke or timed out: worth another try later.
  The session notices a dropped connection and opens a new one for the next message;
- ``rejected``: a 5xx reply, kept with the server's words: trying again cannot help.

A connection that cannot be opened raises instead, before any message is touched:
:class:`SmtpUnavailable` (a :class:`~personal_assistant.workers.errors.TransientError`: the
network, a timeout, a 4xx greeting) or :class:`SmtpSetupError` (a
:class:`~personal_assistant.workers.errors.PermanentError`: a refused login, an untrusted
certificate, no STARTTLS), which only the settings can fix.

The password is never logged nor shown in errors. Tests that run their own server pass an
``ssl_context`` that trusts its certificate; production uses the system's trust store.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Final, Literal

from personal_assistant.workers.config import MASK
from personal_assistant.workers.config.domain_settings import DomainSettings
from personal_assistant.workers.errors import PermanentError, TransientError

# Server replies are stored and dead-lettered; a misbehaving server may send pages of text.
MAX_REPLY_CHARS: Final = 1000


class Outcome(StrEnum):
    """What became of one message on the connection."""

    SENT = "sent"
    DEFERRED = "deferred"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Delivery:
    """The outcome of one message, with the server's reply when it refused it."""

    outcome: Outcome
    #: The SMTP reply code of a refusal (None: accepted, or no reply: the connection broke).
    code: int | None = None
    #: The server's reply (or what went wrong with the connection), on one line.
    reply: str = ""
    #: Recipients refused while others accepted the message: address -> reply.
    refused: dict[str, str] = field(default_factory=dict)


class SmtpUnavailable(TransientError):
    """The SMTP server cannot be reached or will not talk now: try again later."""


class SmtpSetupError(PermanentError):
    """The SMTP server refuses this configuration (login, certificate, STARTTLS): fix settings."""


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to connect: the SMTP_* settings."""

    host: str
    port: int
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: DomainSettings) -> SmtpConfig:
        """SMTP_HOST, SMTP_PORT (or the security's usual port), SMTP_SECURITY, login, timeout."""
        return cls(
            host=settings.smtp_host,
            port=settings.effective_smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            timeout=settings.smtp_timeout,
        )

    @property
    def where(self) -> str:
        """``SMTP host:port`` for messages."""
        return f"SMTP {self.host}:{self.port}"


def one_line(text: str, limit: int = MAX_REPLY_CHARS) -> str:
    """``text`` on one line (line breaks as " / "), cut at ``limit`` characters."""
    flat = " / ".join(part.strip() for part in text.splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def reply_text(code: int | None, raw: bytes | str) -> str:
    """An SMTP reply as one line: ``550 5.1.1 no such user``."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return one_line(f"{code} {text}" if code is not None else text)


# A plain dot-atom address needs no quoting in a MAIL or RCPT path (nearly every address).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _path(address: str) -> str:
    """``<address>``; through smtplib's parser only when the address is not plain."""
    return f"<{address}>" if _PLAIN_ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


def _abandon(smtp: smtplib.SMTP, code: int) -> None:
    """After a refusal: the server is closing (421), or the transaction is reset for the next."""
    if code == 421:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


def _transaction(
    smtp: smtplib.SMTP, message: bytes, sender: str, recipients: Sequence[str]
) -> dict[str, tuple[int, bytes]]:
    """One mail transaction, as ``smtplib.SMTP.sendmail`` runs it (same replies, same errors),
    without parsing each address again: that parse cost a third of the client's time per
    message, and the addresses were checked when the message was stored."""
    smtp.ehlo_or_helo_if_needed()
    code, reply = smtp.docmd("MAIL", f"FROM:{_path(sender)}")
    if code != 250:
        _abandon(smtp, code)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for recipient in recipients:
        code, reply = smtp.docmd("RCPT", f"TO:{_path(recipient)}")
        if code not in {250, 251}:
            refused[recipient] = (code, reply)
            if code == 421:
                smtp.close()
                raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(recipients):
        _abandon(smtp, 0)
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = smtp.data(message)
    if code != 250:
        _abandon(smtp, code)
        raise smtplib.SMTPDataError(code, reply)
    return refused


def _refusal(code: int, reply: str) -> Delivery:
    """A reply code's delivery: 4xx try again later, 5xx (and anything odd) give up."""
    if 400 <= code < 500:
        return Delivery(Outcome.DEFERRED, code, reply)
    return Delivery(Outcome.REJECTED, code, reply)


class SmtpSession:
    """One SMTP connection, opened on first use and again after the server dropped it."""

    def __init__(self, config: SmtpConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._ssl_context = ssl_context
        self._smtp: smtplib.SMTP | None = None
        # smtplib's default (socket.getfqdn) may wait seconds on a DNS lookup per connection.
        self._local_hostname = socket.gethostname() or "localhost"
        #: Connections opened so far (the first and every reconnection).
        self.connections = 0

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """True while the connection is up (smtplib drops its socket when the server hangs up)."""
        return self._smtp is not None and self._smtp.sock is not None

    def _scrub(self, text: str) -> str:
        password = self.config.password
        return text.replace(password, MASK) if password else text

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def open(self) -> None:
        """Connect, STARTTLS or TLS, log in. Raises SmtpUnavailable or SmtpSetupError."""
        self.close()
        config = self.config
        smtp: smtplib.SMTP | None = None
        try:
            if config.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    config.host,
                    config.port,
                    local_hostname=self._local_hostname,
                    timeout=config.timeout,
                    context=self._context(),
                )
            else:
                smtp = smtplib.SMTP(
                    config.host,
                    config.port,
                    local_hostname=self._local_hostname,
                    timeout=config.timeout,
                )
            if config.security == "starttls":
                smtp.starttls(context=self._context())
            if config.username:
                smtp.login(config.username, config.password)
        except Exception as exc:
            if smtp is not None:
                smtp.close()
            raise self._open_error(exc) from None
        self._smtp = smtp
        self.connections += 1

    def _open_error(self, exc: Exception) -> Exception:
        """What a failed connection attempt means: try later, or fix the settings."""
        where = self.config.where
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            what = "STARTTLS" if self.config.security == "starttls" else "AUTH"
            return SmtpSetupError(f"{where} does not offer {what}: {self._scrub(str(exc))}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return SmtpSetupError(
                f"{where}: certificate not trusted ({exc.verify_message or exc}); trust its CA "
                "(SSL_CERT_FILE) or fix SMTP_HOST"
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            # A 4xx reply (greeting, EHLO, a "454 try later" to AUTH) passes; a 5xx does not.
            reply = self._scrub(reply_text(exc.smtp_code, exc.smtp_error))
            if 400 <= exc.smtp_code < 500:
                return SmtpUnavailable(f"{where} is not available now: {reply}")
            login = isinstance(exc, smtplib.SMTPAuthenticationError)
            what = "the login of SMTP_USERNAME" if login else "the session"
            return SmtpSetupError(f"{where} refused {what}: {reply}")
        # OSError (refused, unreachable, timeout, TLS handshake), a dropped connection.
        detail = self._scrub(one_line(str(exc) or "no detail"))
        return SmtpUnavailable(f"{where} unreachable: {type(exc).__name__}: {detail}")

    def send(self, message: bytes, sender: str, recipients: Sequence[str]) -> Delivery:
        """Send the ``message`` bytes from ``sender`` to ``recipients`` (the envelope); say what
        happened. The message is 7-bit (message.py builds it so): no SMTPUTF8 needed.

        Opens the connection first if it is not open (which may raise, see :meth:`open`).
        """
        if not self.is_open:
            self.open()
        smtp = self._smtp
        assert smtp is not None
        try:
            refused = _transaction(smtp, message, sender, recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            replies = {
                address: reply_text(code, text) for address, (code, text) in exc.recipients.items()
            }
            codes = [code for code, _ in exc.recipients.values()]
            retry = [code for code in codes if 400 <= code < 500]
            code = retry[0] if retry else codes[0] if codes else 550
            reply = one_line("; ".join(f"{a}: {r}" for a, r in replies.items()))
            return _refusal(code, reply)
        except smtplib.SMTPResponseException as exc:
            return _refusal(exc.smtp_code, reply_text(exc.smtp_code, exc.smtp_error))
        except (OSError, smtplib.SMTPException) as exc:
            # A broken connection or a timeout (socket.timeout and ssl errors are OSErrors):
            # the server may or may not have taken the message; a new connection comes next.
            self.close()
            detail = one_line(str(exc) or "no detail")
            return Delivery(Outcome.DEFERRED, None, f"{type(exc).__name__}: {detail}")
        return Delivery(
            Outcome.SENT,
            refused={address: reply_text(code, text) for address, (code, text) in refused.items()},
        )

    def close(self) -> None:
        """QUIT politely, or just close when the server is gone; never raises."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        # A QUIT that fails (the server already gone) changes nothing: the socket closes anyway.
        with contextlib.suppress(OSError, smtplib.SMTPException):
            if smtp.sock is not None:
                smtp.quit()
        smtp.close()
