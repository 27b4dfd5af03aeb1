"""Where alerts go: log, e-mail (SMTP), Slack (incoming webhook), a signed generic webhook.

A :class:`Notification` is what the alert manager hands over for one alert turning firing or
resolved; a :class:`Channel` sends it and raises on failure. :class:`ChannelDispatcher` sends one
notification to several channels without ever making the caller wait:

- each channel has its own bounded queue and its own sender threads (at most ``workers``), so a
  dead SMTP server's backlog never holds a thread that Slack needs, and an outage cannot grow
  memory: when a channel's queue is full the oldest waiting notification is dropped (counted);
- notifications with the same fingerprint go out in order (a "resolved" never overtakes its
  "firing"), different alerts in parallel;
- a failed send is retried with exponential backoff and jitter; the final failure is logged
  once and counted once (``failure_counter(channel)``).

Secrets stay secret: SMTP passwords and webhook secrets are never logged nor shown in ``repr``
or errors, and webhook URLs (Slack's carry their token in the path) are shown as scheme and host
only (:func:`mask_endpoint`).

Configuration from the environment (:func:`channels_from_env`)::

    ALERT_SMTP_HOST, ALERT_SMTP_PORT (25; 587 with STARTTLS; 465 with SSL), ALERT_SMTP_FROM,
    ALERT_SMTP_TO (comma list), ALERT_SMTP_USER + ALERT_SMTP_PASSWORD (both or neither),
    ALERT_SMTP_STARTTLS / ALERT_SMTP_SSL (true/false), ALERT_SLACK_WEBHOOK_URL,
    ALERT_WEBHOOK_URL + ALERT_WEBHOOK_SECRET, ALERT_CHANNEL_TIMEOUT (seconds, default 5)
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import math
import random
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from types import TracebackType
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from personal_assistant.workers.config import MASK, ConfigError

logger = logging.getLogger(__name__)
#: Where :class:`LogChannel` writes alerts (a separate logger, so they can be routed apart).
ALERT_LOGGER: Final = "personal_assistant.workers.alerts"

STATES: Final = frozenset({"firing", "resolved"})
SIGNATURE_HEADER: Final = "X-Signature-256"
TIMESTAMP_HEADER: Final = "X-Alert-Timestamp"
USER_AGENT: Final = "personal-assistant-workers-alerts/1"
DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_QUEUE_SIZE: Final = 1000
# Bytes of an error response kept for the error message (Slack answers e.g. "invalid_token").
_ERROR_BODY_BYTES = 200
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ChannelError(Exception):
    """A channel could not deliver; the message is safe to log (no secret, masked URLs).

    ``retryable`` is False when sending again cannot help (rejected credentials or recipients,
    an HTTP 4xx other than 408/429, a redirect): the dispatcher then gives up at once.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


# --- The notification -----------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One alert turning ``firing`` or ``resolved``, as every channel receives it."""

    rule: str
    state: str
    severity: str
    message: str
    labels: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state must be 'firing' or 'resolved' (got {self.state!r})")
        if not self.rule:
            raise ValueError("a notification needs the rule's name")

    def to_json(self) -> dict[str, Any]:
        """A strict-JSON-ready dict: values JSON cannot hold (NaN, objects) become strings."""
        return {
            "rule": self.rule,
            "state": self.state,
            "severity": self.severity,
            "message": self.message,
            "labels": {str(k): str(v) for k, v in self.labels.items()},
            "fields": _jsonable(self.fields),
            "fingerprint": self.fingerprint,
            "timestamp": self.timestamp,
        }

    @property
    def title(self) -> str:
        """``[SEVERITY] rule: state``: the e-mail subject and the first line everywhere."""
        return _one_line(f"[{self.severity.upper()}] {self.rule}: {self.state}")

    @property
    def key(self) -> str:
        """What orders sends within a channel: the fingerprint, else the rule and labels."""
        if self.fingerprint:
            return self.fingerprint
        return self.rule + json.dumps(self.labels, sort_keys=True, default=str)

    def iso_time(self) -> str:
        """The notification's time in UTC, ISO 8601."""
        return datetime.fromtimestamp(self.timestamp, UTC).isoformat(timespec="seconds")


@runtime_checkable
class Channel(Protocol):
    """Something that sends a notification somewhere; ``send`` raises when it could not."""

    name: str

    def send(self, n: Notification) -> None:
        """Deliver ``n`` (within the channel's own timeout) or raise."""


# --- Helpers --------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` with everything strict JSON cannot hold turned into strings (NaN -> "nan")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def _one_line(text: str) -> str:
    """Text fit for a header or a log line: no CR/LF (no header injection)."""
    return " ".join(text.splitlines()).strip()


def mask_endpoint(url: str) -> str:
    """``scheme://host[:port]/****``: what may be shown of a URL whose path is a credential."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    if ":" in host:
        host = f"[{host}]"
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment or parts.username
    return f"{parts.scheme}://{host}{port}" + (f"/{MASK}" if hidden else "")


def _check_http_url(url: str, what: str) -> str:
    """An http(s) URL with a host and nothing that could break the request line."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{what}: no URL given")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError(f"{what}: URL {mask_endpoint(url)} contains whitespace or controls")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ValueError(f"{what}: unparseable URL {mask_endpoint(url)}") from None
    if parts.scheme not in {"http", "https"}:
        raise ValueError(f"{what}: URL must be http or https (got {parts.scheme or 'none'!r})")
    if not parts.hostname:
        raise ValueError(f"{what}: URL {mask_endpoint(url)} has no host")
    return url


class _Scrubber:
    """Replaces every secret of a channel by ``****`` in text meant for logs and errors."""

    def __init__(self, *secrets: str | None) -> None:
        # Longest first, so a URL is masked whole before the path inside it.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def _describe(exc: BaseException) -> str:
    """A short, secret-free account of a transport error (no URLs, no payloads)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        return _describe(reason) if isinstance(reason, BaseException) else str(reason)
    text = type(exc).__name__  # unknown errors: their text might hold anything
    if isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error
        if isinstance(reply, bytes):
            reply = reply.decode("utf-8", "replace")
        text = f"SMTP {exc.smtp_code} {_one_line(str(reply or ''))}".strip()
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = f"all {len(exc.recipients)} recipient(s) refused"
    elif isinstance(exc, ssl.SSLError | smtplib.SMTPException):
        text = f"{type(exc).__name__}: {_one_line(str(exc))}"
    elif isinstance(exc, OSError):
        text = f"{type(exc).__name__}: {exc.strerror or exc}"
    return text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured: never re-send a signed alert elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def _post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    what: str,
    scrub: _Scrubber,
) -> None:
    """POST ``body``; any non-2xx answer or transport error raises a safe ChannelError."""
    where = mask_endpoint(url)
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked at construction
        url, data=body, headers={"User-Agent": USER_AGENT, **headers}, method="POST"
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(_ERROR_BODY_BYTES)
    except urllib.error.HTTPError as exc:
        code = exc.code
        try:
            snippet = exc.read(_ERROR_BODY_BYTES).decode("utf-8", "replace")
        except Exception:
            snippet = ""
        finally:
            exc.close()
        snippet = scrub(_one_line(snippet))
        if 300 <= code < 400:
            raise ChannelError(
                f"{what} {where} answered a redirect (HTTP {code}), which is not followed",
                retryable=False,
            ) from None
        retryable = code >= 500 or code in {408, 429}
        detail = f": {snippet}" if snippet else ""
        raise ChannelError(
            f"{what} {where} answered HTTP {code}{detail}", retryable=retryable
        ) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ChannelError(
            f"{what} {where} failed: {scrub(_describe(exc))}",
            retryable=not isinstance(cause, ssl.SSLCertVerificationError),
        ) from None


# --- Channels -------------------------------------------------------------------------------


class LogChannel:
    """Writes each notification to the ``personal_assistant.workers.alerts`` logger."""

    _LEVELS: Final = {
        "critical": logging.CRITICAL,
        "error": logging.ERROR,
        "warning": logging.WARNING,
    }

    def __init__(self, name: str = "log", logger_name: str = ALERT_LOGGER) -> None:
        self.name = name
        self._logger = logging.getLogger(logger_name)

    def send(self, n: Notification) -> None:
        """Log at the severity's level while firing, at INFO once resolved."""
        level = logging.INFO
        if n.state == "firing":
            level = self._LEVELS.get(n.severity.lower(), logging.INFO)
        self._logger.log(
            level,
            "%s - %s labels=%s fingerprint=%s",
            n.title,
            _one_line(n.message),
            json.dumps(n.labels, sort_keys=True, default=str),
            n.fingerprint or "-",
        )

    def __repr__(self) -> str:
        return f"LogChannel(name={self.name!r})"


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


class SlackChannel:
    """A Slack incoming webhook: ``{"text": ..., "attachments": [...]}``, POSTed with urllib."""

    _COLORS: Final = {"critical": "#d00000", "error": "#d00000", "warning": "#daa038"}
    _RESOLVED_COLOR: Final = "#2eb886"
    _DEFAULT_COLOR: Final = "#439fe0"

    def __init__(
        self, webhook_url: str, timeout: float = DEFAULT_TIMEOUT_S, *, name: str = "slack"
    ) -> None:
        self._url = _check_http_url(webhook_url, "Slack webhook")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive (got {timeout})")
        self.name = name
        self.timeout = float(timeout)
        parts = urlsplit(webhook_url)
        self._scrub = _Scrubber(webhook_url, parts.path, parts.query, parts.password)

    @property
    def endpoint(self) -> str:
        """The webhook URL as it may be shown (scheme and host)."""
        return mask_endpoint(self._url)

    def __repr__(self) -> str:
        return f"SlackChannel({self.endpoint})"

    @staticmethod
    def _escape(text: str) -> str:
        """Slack's mrkdwn escaping: '&', '<' and '>' only."""
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def payload(self, n: Notification) -> dict[str, Any]:
        """The webhook's JSON: a ``text`` (what notifications show) and one attachment."""
        esc = self._escape
        if n.state == "resolved":
            color = self._RESOLVED_COLOR
        else:
            color = self._COLORS.get(n.severity.lower(), self._DEFAULT_COLOR)
        text = f"*{esc(n.title)}*\n{esc(n.message)}"
        details = [
            {"title": esc(str(k)), "value": esc(str(v)), "short": True}
            for k, v in [*sorted(n.labels.items()), *sorted(n.fields.items())]
        ]
        footer = f"fingerprint {n.fingerprint}" if n.fingerprint else "personal-assistant workers"
        return {
            "text": text,
            "attachments": [
                {
                    "fallback": f"{n.title}: {_one_line(n.message)}",
                    "color": color,
                    "fields": details,
                    "footer": esc(footer),
                    "ts": int(n.timestamp),
                }
            ],
        }

    def send(self, n: Notification) -> None:
        """POST the payload; non-2xx or a transport error raises (URL masked)."""
        body = json.dumps(self.payload(n), default=str).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        _post(
            self._url, body, headers, timeout=self.timeout, what="Slack webhook", scrub=self._scrub
        )


class WebhookChannel:
    """``Notification.to_json()`` POSTed as JSON, signed with HMAC-SHA256 of the exact body.

    Headers: ``X-Signature-256: sha256=<hex>`` (GitHub's scheme: the receiver recomputes the
    HMAC of the raw body with the shared secret and compares in constant time, see
    :func:`verify_signature`) and ``X-Alert-Timestamp`` (Unix seconds of this attempt; it is not
    covered by the signature: for replay protection use the signed body's ``timestamp`` and
    ``fingerprint``).
    """

    def __init__(
        self,
        url: str,
        secret: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        name: str = "webhook",
    ) -> None:
        if not isinstance(secret, str) or not secret.strip():
            raise ValueError("a webhook channel needs a non-empty secret to sign its requests")
        self._url = _check_http_url(url, "webhook")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive (got {timeout})")
        self.name = name
        self.timeout = float(timeout)
        self._secret = secret.encode()
        parts = urlsplit(url)
        self._scrub = _Scrubber(secret, url, parts.path, parts.query, parts.password)

    @property
    def endpoint(self) -> str:
        """The URL as it may be shown (scheme and host)."""
        return mask_endpoint(self._url)

    def __repr__(self) -> str:
        return f"WebhookChannel({self.endpoint}, secret={MASK})"

    def body(self, n: Notification) -> bytes:
        """The exact bytes sent (and signed)."""
        data = n.to_json()
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def sign(self, body: bytes) -> str:
        """The ``X-Signature-256`` value of ``body``."""
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    def send(self, n: Notification) -> None:
        """POST the signed body; non-2xx or a transport error raises (URL and secret masked)."""
        body = self.body(n)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: self.sign(body),
            TIMESTAMP_HEADER: str(int(time.time())),
        }
        _post(self._url, body, headers, timeout=self.timeout, what="webhook", scrub=self._scrub)


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """For receivers: True when ``header`` is ``sha256=`` + the HMAC of ``body`` with ``secret``."""
    if not header or not secret:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.strip())


# --- The dispatcher -------------------------------------------------------------------------


@dataclass
class ChannelStats:
    """Counts of one channel since the dispatcher started."""

    sent: int = 0
    failed: int = 0  # given up after the retries, or not retryable
    dropped: int = 0  # evicted from a full queue, or still queued at close()
    pending: int = 0  # waiting in the queue
    in_flight: int = 0  # being sent (or waiting to retry)


@dataclass
class _Job:
    notification: Notification
    key: str


class _Lane:
    """One channel's bounded queue and its sender threads."""

    def __init__(self, name: str, channel: Channel, max_threads: int, queue_size: int) -> None:
        self.name = name
        self.channel = channel
        self.max_threads = max_threads
        self.queue_size = queue_size
        self.cond = threading.Condition()
        self.pending: deque[_Job] = deque()
        self.busy: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.idle = 0
        self.stats = ChannelStats()

    def take(self) -> _Job | None:
        """The oldest job whose alert has no send in flight (caller holds ``cond``)."""
        for index, job in enumerate(self.pending):
            if job.key not in self.busy:
                del self.pending[index]
                self.busy.add(job.key)
                self.stats.in_flight += 1
                return job
        return None


class ChannelDispatcher:
    """Sends notifications to channels in the background: isolated, bounded, retried.

    ``workers`` is the number of sender threads *per channel* (started on demand): that many
    different alerts can be in flight to one channel at once, while one alert's notifications
    stay in order. ``queue_size`` bounds each channel's waiting notifications.
    """

    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
        workers: int = 4,
        failure_counter: Callable[[str], None] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0 (got {retries})")
        if backoff < 0 or max_backoff < backoff:
            raise ValueError(f"need 0 <= backoff <= max_backoff (got {backoff}, {max_backoff})")
        if workers < 1:
            raise ValueError(f"workers must be >= 1 (got {workers})")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1 (got {queue_size})")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._failure_counter = failure_counter
        self._lanes = {
            name: _Lane(name, channel, workers, queue_size) for name, channel in channels.items()
        }
        self._closed = False
        self._stop = threading.Event()

    # Public API ---------------------------------------------------------------------------

    @property
    def channel_names(self) -> list[str]:
        """The configured channels."""
        return list(self._lanes)

    def dispatch(self, channel_names: Sequence[str], n: Notification) -> None:
        """Queue ``n`` for each named channel and return at once; never raises for a channel."""
        if isinstance(channel_names, str):
            channel_names = [channel_names]
        for name in dict.fromkeys(channel_names):
            lane = self._lanes.get(name)
            if lane is None:
                logger.error(
                    "alert %s (%s) names unknown channel %r; configured: %s",
                    n.rule,
                    n.state,
                    name,
                    ", ".join(self._lanes) or "none",
                )
                self._count_failure(name)
                continue
            if not self._enqueue(lane, _Job(n, n.key)):
                logger.error(
                    "alert %s (%s) not sent via %s: the dispatcher is closed", n.rule, n.state, name
                )
                self._count_failure(name)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued notification is sent or given up; False on timeout."""
        deadline = time.monotonic() + max(timeout, 0.0)
        for lane in self._lanes.values():
            with lane.cond:
                while lane.pending or lane.stats.in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        return not (lane.pending or lane.stats.in_flight)
                    lane.cond.wait(remaining)
        return True

    def stats(self) -> dict[str, ChannelStats]:
        """A copy of each channel's counts."""
        result = {}
        for name, lane in self._lanes.items():
            with lane.cond:
                s = lane.stats
                result[name] = ChannelStats(
                    sent=s.sent,
                    failed=s.failed,
                    dropped=s.dropped,
                    pending=len(lane.pending),
                    in_flight=s.in_flight,
                )
        return result

    def close(self, timeout: float = 5.0) -> None:
        """Stop: queued notifications are dropped (counted), retries end, threads are joined.

        Call :meth:`flush` first to deliver what is queued. A send in progress finishes within
        its channel's timeout; threads still sending after ``timeout`` are left (daemons).
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for lane in self._lanes.values():
            with lane.cond:
                left = list(lane.pending)
                lane.pending.clear()
                lane.stats.dropped += len(left)
                lane.cond.notify_all()
            if left:
                logger.error(
                    "%d alert notification(s) not sent via %s: the dispatcher closed first (%s)",
                    len(left),
                    lane.name,
                    ", ".join(sorted({j.notification.rule for j in left})),
                )
                for _ in left:
                    self._count_failure(lane.name)
        deadline = time.monotonic() + timeout
        for lane in self._lanes.values():
            for thread in lane.threads:
                thread.join(max(deadline - time.monotonic(), 0.0))

    def __enter__(self) -> ChannelDispatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Internals ----------------------------------------------------------------------------

    def _enqueue(self, lane: _Lane, job: _Job) -> bool:
        """Queue ``job`` (evicting the oldest when full); False once the dispatcher is closed."""
        evicted: _Job | None = None
        with lane.cond:
            # Checked under the lane's lock: close() clears the queue under it after setting
            # _closed, so no job can slip in behind it and be neither sent nor counted.
            if self._closed:
                return False
            if len(lane.pending) >= lane.queue_size:
                evicted = lane.pending.popleft()
                lane.stats.dropped += 1
            lane.pending.append(job)
            if lane.idle == 0 and len(lane.threads) < lane.max_threads:
                thread = threading.Thread(
                    target=self._run,
                    args=(lane,),
                    name=f"alert-{lane.name}-{len(lane.threads) + 1}",
                    daemon=True,  # a send stuck on a dead server never blocks interpreter exit
                )
                lane.threads.append(thread)
                thread.start()
            lane.cond.notify_all()
        if evicted is not None:
            logger.error(
                "alert %s (%s) dropped from channel %s: its queue is full (%d waiting)",
                evicted.notification.rule,
                evicted.notification.state,
                lane.name,
                lane.queue_size,
            )
            self._count_failure(lane.name)
        return True

    def _run(self, lane: _Lane) -> None:
        while True:
            with lane.cond:
                job = lane.take()
                while job is None:
                    if self._closed:
                        return
                    lane.idle += 1
                    lane.cond.wait()
                    lane.idle -= 1
                    job = lane.take()
            try:
                delivered = self._deliver(lane, job.notification)
            except BaseException:  # pragma: no cover - _deliver catches Exception itself
                delivered = False
                logger.exception("alert sender for %s crashed", lane.name)
            with lane.cond:
                lane.busy.discard(job.key)
                lane.stats.in_flight -= 1
                if delivered:
                    lane.stats.sent += 1
                else:
                    lane.stats.failed += 1
                lane.cond.notify_all()
            if not delivered:
                self._count_failure(lane.name)

    def _delay(self, failures: int) -> float:
        """Exponential backoff with jitter: in [d/2, d], d = backoff * 2^(failures-1), capped."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not security

    def _deliver(self, lane: _Lane, n: Notification) -> bool:
        """Send with retries; log the final failure once. True when delivered."""
        attempts = 0
        error = "no attempt"
        while True:
            attempts += 1
            try:
                lane.channel.send(n)
            except Exception as exc:
                retryable = not isinstance(exc, ChannelError) or exc.retryable
                error = str(exc) if isinstance(exc, ChannelError) else _describe(exc)
            else:
                if attempts > 1:
                    logger.info(
                        "alert %s (%s) sent via %s at attempt %d",
                        n.rule,
                        n.state,
                        lane.name,
                        attempts,
                    )
                return True
            if not retryable or attempts > self.retries or self._stop.is_set():
                break
            delay = self._delay(attempts)
            logger.debug(
                "alert %s via %s failed (attempt %d: %s); retrying in %.2fs",
                n.rule,
                lane.name,
                attempts,
                error,
                delay,
            )
            if self._stop.wait(delay):
                break
        logger.error(
            "alert %s (%s, fingerprint %s) not delivered via %s after %d attempt(s): %s",
            n.rule,
            n.state,
            n.fingerprint or "-",
            lane.name,
            attempts,
            error,
        )
        return False

    def _count_failure(self, name: str) -> None:
        if self._failure_counter is None:
            return
        try:
            self._failure_counter(name)
        except Exception:
            logger.exception("alert failure counter raised for channel %s", name)


# --- Configuration from the environment -----------------------------------------------------


def _env(env: Mapping[str, str], key: str) -> str:
    return (env.get(key) or "").strip()


def _flag(env: Mapping[str, str], key: str) -> bool:
    value = _env(env, key).lower()
    if not value or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ConfigError(f"{key} must be true or false (got {value!r})")


def _positive_float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = _env(env, key)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number of seconds (got {raw!r})") from None
    if not value > 0:
        raise ConfigError(f"{key} must be positive (got {raw!r})")
    return value


def _require(env: Mapping[str, str], key: str, because: str) -> str:
    value = _env(env, key)
    if not value:
        raise ConfigError(f"{key} is required {because}")
    return value


def _smtp_from_env(env: Mapping[str, str], timeout: float) -> EmailChannel | None:
    keys = ("HOST", "PORT", "USER", "PASSWORD", "FROM", "TO", "STARTTLS", "SSL")
    given = [f"ALERT_SMTP_{k}" for k in keys if _env(env, f"ALERT_SMTP_{k}")]
    if not given:
        return None
    because = f"for e-mail alerts (set: {', '.join(given)})"
    host = _require(env, "ALERT_SMTP_HOST", because)
    sender = _require(env, "ALERT_SMTP_FROM", because)
    recipients = [r.strip() for r in _require(env, "ALERT_SMTP_TO", because).split(",")]
    recipients = [r for r in recipients if r]
    if not recipients:
        raise ConfigError(f"ALERT_SMTP_TO is required {because}")
    starttls = _flag(env, "ALERT_SMTP_STARTTLS")
    use_ssl = _flag(env, "ALERT_SMTP_SSL")
    if starttls and use_ssl:
        raise ConfigError("ALERT_SMTP_STARTTLS and ALERT_SMTP_SSL exclude each other: pick one")
    raw_port = _env(env, "ALERT_SMTP_PORT")
    port = 465 if use_ssl else 587 if starttls else 25
    if raw_port:
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            raise ConfigError(f"ALERT_SMTP_PORT must be a port number 1-65535 (got {raw_port!r})")
        port = int(raw_port)
    user, password = _env(env, "ALERT_SMTP_USER"), env.get("ALERT_SMTP_PASSWORD") or ""
    if user and not password:
        raise ConfigError("ALERT_SMTP_PASSWORD is required when ALERT_SMTP_USER is set")
    if password and not user:
        raise ConfigError("ALERT_SMTP_USER is required when ALERT_SMTP_PASSWORD is set")
    for key, value in (("ALERT_SMTP_FROM", sender), *(("ALERT_SMTP_TO", r) for r in recipients)):
        if "@" not in value or any(ch.isspace() for ch in value):
            raise ConfigError(f"{key} must hold e-mail addresses (got {value!r})")
    try:
        return EmailChannel(
            host,
            port,
            sender,
            recipients,
            username=user or None,
            password=password or None,
            starttls=starttls,
            use_ssl=use_ssl,
            timeout=timeout,
        )
    except ValueError as exc:  # the messages above name the variable; this is the backstop
        raise ConfigError(f"ALERT_SMTP_*: {exc}") from None


def _url_channel(
    env: Mapping[str, str], key: str, build: Callable[[str], Channel]
) -> Channel | None:
    url = _env(env, key)
    if not url:
        return None
    try:
        return build(url)
    except ValueError as exc:  # messages show the URL masked (mask_endpoint)
        raise ConfigError(f"{key}: {exc}") from None


def channels_from_env(env: Mapping[str, str]) -> dict[str, Channel]:
    """The configured channels by name (``log`` always; ``email``, ``slack``, ``webhook``).

    A channel configured in part raises :class:`ConfigError` (a ValueError) naming the missing or
    invalid variable; no message contains a password, secret or webhook path.
    """
    timeout = _positive_float(env, "ALERT_CHANNEL_TIMEOUT", DEFAULT_TIMEOUT_S)
    channels: dict[str, Channel] = {"log": LogChannel()}
    email = _smtp_from_env(env, timeout)
    if email is not None:
        channels["email"] = email
    slack = _url_channel(
        env, "ALERT_SLACK_WEBHOOK_URL", lambda url: SlackChannel(url, timeout=timeout)
    )
    if slack is not None:
        channels["slack"] = slack
    secret = env.get("ALERT_WEBHOOK_SECRET") or ""
    if _env(env, "ALERT_WEBHOOK_URL"):
        if not secret.strip():
            raise ConfigError("ALERT_WEBHOOK_SECRET is required when ALERT_WEBHOOK_URL is set")
        webhook = _url_channel(
            env, "ALERT_WEBHOOK_URL", lambda url: WebhookChannel(url, secret, timeout=timeout)
        )
        if webhook is not None:
            channels["webhook"] = webhook
    elif secret.strip():
        raise ConfigError("ALERT_WEBHOOK_URL is required when ALERT_WEBHOOK_SECRET is set")
    return channels
