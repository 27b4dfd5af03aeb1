"""Counts kept in memory and added to one Redis hash in batches: a count costs a dict update.

The base of the sent-task counter (sent_counter.py) and of the domain counters
(domain_counters.py). Each process counts into its own pending dict and adds it to the hash
(HINCRBY per field, one pipelined round trip) at most once per ``flush_every``, from a timer,
and once more at exit; pool children flush when they end (the hooks call :meth:`flush`, since
a child exits without running atexit handlers). A Redis outage keeps the counts pending until
a flush succeeds; counts not yet added when a process is SIGKILLed (at most ``flush_every``
of them) are lost.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable

import redis

logger = logging.getLogger(__name__)

# Counts reach Redis at most this late; a busy process pays one round trip per second.
FLUSH_EVERY_S = 1.0


class RedisHashCounter:
    """Counts per hash field, added to the Redis hash ``key`` in batches."""

    def __init__(
        self, key: str, client: Callable[[], redis.Redis], flush_every: float = FLUSH_EVERY_S
    ) -> None:
        self.key = key
        self._client = client
        self.flush_every = flush_every
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._failing = False
        # A forked child (a pool process) starts with a copy of the parent's pending counts:
        # they are the parent's to add, so the child starts from nothing.
        os.register_at_fork(after_in_child=self._forget_inherited)
        atexit.register(self.flush)

    def add(self, field: str, amount: int = 1) -> None:
        """Add ``amount`` to ``field``; in Redis within ``flush_every``."""
        with self._lock:
            self._pending[field] = self._pending.get(field, 0) + amount
            if self._timer is None:
                self._timer = threading.Timer(self.flush_every, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Add every pending count to Redis now (kept for the next try if Redis fails)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not pending:
            return
        try:
            with self._client().pipeline(transaction=False) as batch:
                for field, amount in pending.items():
                    batch.hincrby(self.key, field, amount)
                batch.execute()
        except redis.RedisError:
            if not self._failing:
                logger.warning("could not add counts to Redis (%s); kept for later", self.key)
            self._failing = True
            with self._lock:
                for field, amount in pending.items():
                    self._pending[field] = self._pending.get(field, 0) + amount
            return
        self._failing = False

    def _forget_inherited(self) -> None:
        self._pending = {}
        self._lock = threading.Lock()
        self._timer = None
