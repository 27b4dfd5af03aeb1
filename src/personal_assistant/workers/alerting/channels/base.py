"""The alert notification and what every channel shares.

A :class:`Notification` is what the alert manager hands over for one alert turning firing or
resolved; a :class:`Channel` sends it and raises on failure (:class:`ChannelError`). Here too are
the small helpers the channel modules share: one-line text, a scrubber of secrets, and
secret-free descriptions of transport errors.
"""

from __future__ import annotations

import json
import math
import smtplib
import ssl
import time
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.templates import clip_message
from personal_assistant.workers.config import ALERT_CHANNEL_TIMEOUT_S, MASK

STATES: Final = frozenset({"firing", "resolved"})
# A channel built without a timeout waits as long as one built from the settings' default.
DEFAULT_TIMEOUT_S: Final = ALERT_CHANNEL_TIMEOUT_S


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
    """One alert turning ``firing`` or ``resolved``, as every channel receives it.

    Its message is at most ``ALERT_MESSAGE_MAX_CHARS`` characters (cut with a marker).
    """

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
        if isinstance(self.message, str) and len(self.message) > c.ALERT_MESSAGE_MAX_CHARS:
            # Rendered messages are capped already; a prefix ("RESOLVED: ", "TEST: ") or a
            # message built elsewhere must not get past the cap on the way to a channel.
            object.__setattr__(self, "message", clip_message(self.message))

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
