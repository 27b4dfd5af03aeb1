"""Where alerts go: log, e-mail (SMTP), Slack (incoming webhook), a signed generic webhook.

A :class:`Notification` is what the alert manager hands over for one alert turning firing or
resolved; a :class:`Channel` sends it and raises on failure. This module holds the log, Slack and
webhook channels and the webhook signature helpers, and is the import path of the whole alert
channel API: it re-exports the notification and protocol (``alert_notification``), the e-mail
channel (``alert_email``) and :class:`ChannelDispatcher`, which sends one notification to
several channels without ever making the caller wait (``alert_dispatch``). The channels of a
process are built from its settings by ``alerting.channels.config.channels_from_settings``. The
Alertmanager channel (``alertmanager.py``) sends with this module's :func:`_post`, so it
imports this module and is not re-exported here.

Secrets stay secret: SMTP passwords and webhook secrets are never logged nor shown in ``repr``
or errors, and webhook URLs (Slack's carry their token in the path) are shown as scheme and host
only (:func:`mask_endpoint`). Slack and webhook URLs must be https (plain http is accepted only to
a loopback host, which is what tests use): a webhook body names failing tasks and their errors,
and a Slack URL is itself a credential. That check (``check_http_url``) and
:func:`mask_endpoint` live in config/ (urls.py, masking.py), which checks ALERT_* with them.

Webhook signatures (``signing.py``, re-exported here): ``X-Alert-Timestamp: <t>`` (Unix
seconds) and ``X-Signature-256: sha256=<hex>``, the HMAC-SHA256 with the shared secret of
``b"<t>." + body``. A receiver recomputes it, compares in constant time and refuses a timestamp
more than ``WEBHOOK_MAX_AGE_S`` (300 s) from its clock, either way (:func:`verify_signature`), so
a captured request cannot be replayed later. The secret is at least ``WEBHOOK_MIN_SECRET_BYTES``
(32) bytes.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from personal_assistant.workers.alerting.channels.base import (
    DEFAULT_TIMEOUT_S,
    STATES,
    Channel,
    ChannelError,
    Notification,
    _describe,
    _one_line,
    _Scrubber,
)
from personal_assistant.workers.alerting.channels.email import EmailChannel
from personal_assistant.workers.alerting.channels.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    secret_problem,
    sign,
    verify_signature,
)
from personal_assistant.workers.alerting.delivery import (
    DEFAULT_QUEUE_SIZE,
    ChannelDispatcher,
    ChannelStats,
)
from personal_assistant.workers.config import MASK, ConfigError, check_http_url, mask_endpoint

__all__ = [
    "ALERT_LOGGER",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_TIMEOUT_S",
    "SIGNATURE_HEADER",
    "STATES",
    "TIMESTAMP_HEADER",
    "USER_AGENT",
    "Channel",
    "ChannelDispatcher",
    "ChannelError",
    "ChannelStats",
    "ConfigError",
    "EmailChannel",
    "LogChannel",
    "Notification",
    "SlackChannel",
    "WebhookChannel",
    "mask_endpoint",
    "verify_signature",
]

#: Where :class:`LogChannel` writes alerts (a separate logger, so they can be routed apart).
ALERT_LOGGER: Final = "personal_assistant.workers.alerts"

USER_AGENT: Final = "personal-assistant-workers-alerts/1"
# Bytes of an error response kept for the error message (Slack answers e.g. "invalid_token").
_ERROR_BODY_BYTES = 200


# --- Helpers --------------------------------------------------------------------------------


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


class SlackChannel:
    """A Slack incoming webhook: ``{"text": ..., "attachments": [...]}``, POSTed with urllib."""

    _COLORS: Final = {"critical": "#d00000", "error": "#d00000", "warning": "#daa038"}
    _RESOLVED_COLOR: Final = "#2eb886"
    _DEFAULT_COLOR: Final = "#439fe0"

    def __init__(
        self, webhook_url: str, timeout: float = DEFAULT_TIMEOUT_S, *, name: str = "slack"
    ) -> None:
        self._url = check_http_url(webhook_url, "Slack webhook")
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
    """``Notification.to_json()`` POSTed as JSON, signed with its timestamp (HMAC-SHA256).

    Headers: ``X-Alert-Timestamp: <t>`` (Unix seconds of this attempt) and ``X-Signature-256:
    sha256=<hex>``, the HMAC of ``b"<t>." + body`` with the shared secret (the module doc of
    ``alert_signing`` gives the scheme; receivers call :func:`verify_signature`, which refuses
    a request older or newer than ``WEBHOOK_MAX_AGE_S``).
    """

    def __init__(
        self,
        url: str,
        secret: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        name: str = "webhook",
    ) -> None:
        problem = secret_problem(secret)
        if problem is not None:
            raise ValueError(problem)
        self._url = check_http_url(url, "webhook")
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

    def sign(self, body: bytes, timestamp: int) -> str:
        """The ``X-Signature-256`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
        return sign(self._secret, body, timestamp)

    def send(self, n: Notification) -> None:
        """POST the signed body; non-2xx or a transport error raises (URL and secret masked)."""
        body = self.body(n)
        # Signed per attempt: a retry carries a fresh timestamp, so it is not taken for a replay.
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: self.sign(body, timestamp),
        }
        _post(self._url, body, headers, timeout=self.timeout, what="webhook", scrub=self._scrub)
