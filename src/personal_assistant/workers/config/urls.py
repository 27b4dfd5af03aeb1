"""What a URL in the settings must be: Celery broker and backend URLs, Redis URLs, http(s) URLs.

:func:`check_celery_url` catches a typo in a broker or result backend URL at start-up, before
Celery hides it; :func:`is_redis_url` and :func:`state_redis_url` say which Redis the project's
own state lives in; :func:`check_http_url` is the rule for webhook URLs (https, plain http only to
a loopback host). Every error shows the URL masked (see masking.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

from personal_assistant.workers.config.masking import mask_endpoint, mask_url

BROKER_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp", "memory"})
BACKEND_SCHEMES = frozenset(
    {"redis", "rediss", "rpc", "db+postgresql", "db+sqlite", "cache+memory"}
)
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str) -> bool:
    """True for a Redis URL (TCP, TLS or a unix socket), the kind redis-py opens."""
    return url.startswith(REDIS_URL_SCHEMES)


def state_redis_url(broker_url: str, backend_url: str) -> str:
    """Where the project keeps its own state (dead letters, workflows): the broker's Redis,
    else the result backend's. One rule, so every component finds the same database."""
    return broker_url if is_redis_url(broker_url) else backend_url


def check_celery_url(url: str, allowed: frozenset[str], what: str) -> str:
    """Parse a broker/backend URL far enough to catch typos before Celery hides them.

    ``allowed`` holds the schemes accepted, ``what`` names the URL in the error. urllib's own
    messages are not repeated: they quote parts of the authority, where a password holding '/'
    or '@' ends up (``Port could not be cast ... 'pa'``).
    """

    def refuse(reason: str) -> ValueError:
        return ValueError(f"unparseable {what} URL {mask_url(url)!r}: {reason}")

    try:
        parts = urlsplit(url)
    except ValueError:
        raise refuse("malformed host part") from None
    scheme = parts.scheme
    if scheme not in allowed:
        raise refuse(f"unknown scheme {scheme!r}; use one of {sorted(allowed)}")
    needs_host = scheme not in {"memory", "rpc", "cache+memory", "db+sqlite"}
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise refuse("the port must be a number from 0 to 65535") from None
    if needs_host and not host:
        raise refuse("no host in the URL")
    database = parts.path.strip("/")
    if scheme in {"redis", "rediss"} and database and not database.isdigit():
        raise refuse("the database must be a number")
    return url  # as given: re-joining the parts would drop the '//' of host-less URLs


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): where plain http may go."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_http_url(
    url: object, what: str, shown: str, scheme_rule: Callable[[str], str]
) -> SplitResult:
    """The parts of an http(s) URL with a host and nothing that could break the request line,
    or ValueError naming ``what`` and showing the URL as ``shown`` (masked by the caller);
    ``scheme_rule(scheme)`` ends the message for another scheme."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{what}: no URL given")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError(f"{what}: URL {shown} contains whitespace or controls")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ValueError(f"{what}: unparseable URL {shown}") from None
    if parts.scheme not in {"http", "https"}:
        raise ValueError(f"{what}: URL {scheme_rule(parts.scheme or 'none')}")
    if not parts.hostname:
        raise ValueError(f"{what}: URL {shown} has no host")
    return parts


def check_http_url(url: str, what: str) -> str:
    """An https URL (http to loopback only) with a host and nothing that could break the
    request line; the ValueError shows the URL masked (an alert body names failing tasks and
    their errors, and a Slack URL is itself a credential)."""
    shown = mask_endpoint(url) if isinstance(url, str) else repr(url)
    parts = split_http_url(url, what, shown, lambda scheme: f"must be https (got {scheme!r})")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        raise ValueError(
            f"{what}: URL {mask_endpoint(url)} must be https (plain http only to a loopback host)"
        )
    return url
