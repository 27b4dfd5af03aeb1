"""The package's Redis clients: one per URL and process, with one timeout and retry policy.

Everything that talks to Redis outside kombu's own connections (workflows, dead letters,
liveness, metrics, alert state, beat) gets its client from :func:`client_for`, so a URL is
dialled with the same timeouts everywhere and each process keeps one connection pool per URL
instead of one per component. redis-py's pool notices a fork (it compares the pid) and opens
fresh connections in a pool child, so a client made before the fork is safe to use after it.

:func:`probe_client` is the exception, on purpose: a health probe or a start-up check asks "is
it up now" and must answer within its own deadline, so it tries once and is not shared.
"""

from __future__ import annotations

import threading

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from personal_assistant.workers import constants as c

__all__ = ["REDIS_TRANSIENT_ERRORS", "client_for", "close_all", "probe_client"]

# redis-py's errors worth retrying a task for (its ConnectionError is not the built-in one): a
# server restarting or briefly unreachable. Passed to errors.is_transient by the task base.
REDIS_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
)

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def _retry() -> Retry:
    return Retry(
        ExponentialBackoff(cap=c.REDIS_RETRY_CAP_S, base=c.REDIS_RETRY_BASE_S),
        c.REDIS_RETRIES,
        supported_errors=(redis.ConnectionError, redis.TimeoutError),
    )


def client_for(url: str) -> redis.Redis:
    """The shared client for ``url`` in this process (created on first use)."""
    client = _clients.get(url)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=c.REDIS_SOCKET_TIMEOUT_S,
                socket_connect_timeout=c.REDIS_CONNECT_TIMEOUT_S,
                retry=_retry(),
            )
            _clients[url] = client
    return client


def probe_client(url: str, timeout: float = c.REDIS_PROBE_TIMEOUT_S) -> redis.Redis:
    """A new, unshared client that tries once within ``timeout`` seconds (close it after use)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def close_all() -> None:
    """Close every shared client (tests, and a process that is about to exit cleanly)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()
