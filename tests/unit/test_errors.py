"""The error taxonomy: which failures a task retries, and which it dead-letters at once."""

from __future__ import annotations

import errno
import socket

import pytest
import redis

from personal_assistant.workers.errors import PermanentError, TransientError, is_transient
from personal_assistant.workers.redis_clients import REDIS_TRANSIENT_ERRORS
from personal_assistant.workers.utils import error_handling


@pytest.mark.parametrize(
    "exc",
    [
        TransientError("503"),
        ConnectionError("reset"),
        ConnectionRefusedError("refused"),
        TimeoutError("slow"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize(
    "exc",
    [redis.ConnectionError("redis down"), redis.TimeoutError("redis slow")],
    ids=lambda e: type(e).__name__,
)
def test_a_client_library_s_errors_are_retried_when_its_types_are_given(
    exc: BaseException,
) -> None:
    assert is_transient(exc) is False
    assert is_transient(exc, also=REDIS_TRANSIENT_ERRORS) is True


def test_the_seed_path_counts_redis_errors_as_transient() -> None:
    assert error_handling.is_transient(redis.ConnectionError("redis down")) is True
    assert error_handling.is_transient(PermanentError("bad input")) is False


@pytest.mark.parametrize(
    "exc",
    [
        PermanentError("bad input"),
        ValueError("bad value"),
        KeyError("missing"),
        FileNotFoundError("gone"),
        PermissionError("denied"),
        IsADirectoryError("dir"),
        RuntimeError("bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_and_unknown_errors_are_not_retried(exc: BaseException) -> None:
    assert is_transient(exc) is False


def test_a_permanent_error_wins_over_a_transient_base_class() -> None:
    class PermanentTimeout(PermanentError, TimeoutError):
        pass

    assert is_transient(PermanentTimeout("never retried")) is False


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENETUNREACH, "Network is unreachable"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    ],
    ids=["ENETUNREACH", "EHOSTUNREACH", "EAI_AGAIN"],
)
def test_network_level_os_errors_are_retried(exc: OSError) -> None:
    assert is_transient(exc) is True
