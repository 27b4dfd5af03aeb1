"""E-mail alerts: :class:`EmailChannel` sends a notification as plain-text mail over SMTP.

STARTTLS or implicit TLS, with or without login; the SMTP password is never logged nor shown in
``repr`` or errors, and a login without STARTTLS or implicit TLS is refused when the channel is
built: AUTH PLAIN and LOGIN send the password merely base64-encoded.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from personal_assistant.workers.alerting.channels.base import (
    DEFAULT_TIMEOUT_S,
    ChannelError,
    Notification,
    _describe,
    _one_line,
    _Scrubber,
)
from personal_assistant.workers.config import MASK

# Sending again cannot help: credentials, addresses, a missing extension, an untrusted certificate.
_PERMANENT_SMTP_ERRORS = (
    smtplib.SMTPAuthenticationError,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPNotSupportedError,
    ssl.SSLCertVerificationError,
)


class EmailChannel:
    """Plain-text e-mail over SMTP (smtplib), optionally STARTTLS or implicit TLS, with login."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_ssl: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        name: str = "email",
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if not host or any(ch.isspace() for ch in host):
            raise ValueError(f"SMTP host must be a host name (got {host!r})")
        if not 0 < int(port) < 65536:
            raise ValueError(f"SMTP port must be 1-65535 (got {port})")
        if isinstance(recipients, str):
            recipients = [r for r in (x.strip() for x in recipients.split(",")) if r]
        rcpts = [r.strip() for r in recipients if r.strip()]
        if not rcpts:
            raise ValueError("an e-mail channel needs at least one recipient")
        for address in (sender, *rcpts):
            if "@" not in address or _one_line(address) != address or "," in address:
                raise ValueError(f"not an e-mail address: {address!r}")
        if starttls and use_ssl:
            raise ValueError("choose STARTTLS or implicit TLS (use_ssl), not both")
        if bool(username) != bool(password):
            raise ValueError("SMTP username and password go together: give both or neither")
        if username and not (starttls or use_ssl):
            raise ValueError(
                "an SMTP login needs STARTTLS or implicit TLS (use_ssl): without TLS the"
                " password would go out in clear text"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive (got {timeout})")
        self.name = name
        self.host = host
        self.port = int(port)
        self.sender = sender
        self.recipients = tuple(rcpts)
        self.username = username or None
        self._password = password or None
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.timeout = float(timeout)
        self._ssl_context = ssl_context
        # smtplib's default (socket.getfqdn) can wait seconds on a DNS lookup.
        self._local_hostname = local_hostname or socket.gethostname() or "localhost"
        self._scrub = _Scrubber(self._password)

    def __repr__(self) -> str:
        auth = f", user={self.username!r}, password={MASK}" if self.username else ""
        tls = ", starttls" if self.starttls else ", ssl" if self.use_ssl else ""
        return f"EmailChannel({self.host}:{self.port}{tls}{auth}, to={list(self.recipients)})"

    def build_message(self, n: Notification) -> EmailMessage:
        """The e-mail for ``n``: subject ``[SEVERITY] rule: state``, a plain-text body."""
        msg = EmailMessage()
        msg["Subject"] = n.title
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self._local_hostname)
        msg["X-Alert-Rule"] = _one_line(n.rule)
        msg["X-Alert-State"] = n.state
        msg["X-Alert-Severity"] = _one_line(n.severity)
        if n.fingerprint:
            msg["X-Alert-Fingerprint"] = _one_line(n.fingerprint)
        msg.set_content(self.body(n))
        return msg

    @staticmethod
    def body(n: Notification) -> str:
        """The plain-text body: message, labels, fields, fingerprint and time."""
        lines = [n.title, "", n.message, ""]
        if n.labels:
            lines.append("Labels:")
            lines += [f"  {k}: {v}" for k, v in sorted(n.labels.items())]
        if n.fields:
            lines.append("Details:")
            lines += [f"  {k}: {v}" for k, v in sorted(n.fields.items(), key=lambda kv: kv[0])]
        if n.fingerprint:
            lines.append(f"Fingerprint: {n.fingerprint}")
        lines.append(f"Time: {n.iso_time()}")
        return "\n".join(lines) + "\n"

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def send(self, n: Notification) -> None:
        """Connect, (STARTTLS,) (log in,) send; any failure raises a ChannelError."""
        msg = self.build_message(n)
        where = f"SMTP {self.host}:{self.port}"
        smtp: smtplib.SMTP | None = None
        try:
            if self.use_ssl:
                smtp = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self._local_hostname,
                    timeout=self.timeout,
                    context=self._context(),
                )
            else:
                smtp = smtplib.SMTP(
                    self.host, self.port, local_hostname=self._local_hostname, timeout=self.timeout
                )
            if self.starttls:
                smtp.starttls(context=self._context())
            if self.username and self._password:
                smtp.login(self.username, self._password)
            refused = smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            if smtp is not None:
                smtp.close()
            raise ChannelError(
                f"{where} failed: {self._scrub(_describe(exc))}",
                retryable=not isinstance(exc, _PERMANENT_SMTP_ERRORS),
            ) from None
        # Sent: a failing QUIT must not make the dispatcher send the mail again.
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
        if refused:
            # The others got it: sending again would duplicate their mail.
            raise ChannelError(
                f"{where} refused {len(refused)} of {len(self.recipients)} recipient(s): "
                + ", ".join(sorted(refused)),
                retryable=False,
            )
