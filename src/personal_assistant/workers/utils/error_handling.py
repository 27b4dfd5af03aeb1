"""Seed path for error handling: the retry taxonomy (``errors``) and the dead-letter queue."""

from __future__ import annotations

from personal_assistant.workers.dead_letters.queue import (
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterQueue,
    NotReplayable,
    ReplayRefused,
)
from personal_assistant.workers.errors import PermanentError, TransientError, is_transient

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
