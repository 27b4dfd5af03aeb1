"""Seed path for error handling: the retry taxonomy (``errors``) and the dead-letter queue."""

from __future__ import annotations

from personal_assistant.workers.dead_letters.queue import (
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterQueue,
    NotReplayable,
    ReplayRefused,
)
from personal_assistant.workers.errors import PermanentError, TransientError
from personal_assistant.workers.errors import is_transient as _is_transient
from personal_assistant.workers.redis_clients import REDIS_TRANSIENT_ERRORS

__all__ = [
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "NotReplayable",
    "PermanentError",
    "ReplayRefused",
    "TransientError",
    "is_transient",
]


def is_transient(exc: BaseException) -> bool:
    """True when a task failing with ``exc`` is retried (redis-py's connection errors included)."""
    return _is_transient(exc, also=REDIS_TRANSIENT_ERRORS)
