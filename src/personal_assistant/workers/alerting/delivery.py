"""Sending alerts in the background: :class:`ChannelDispatcher`.

:class:`ChannelDispatcher` sends one notification to several channels without ever making the
caller wait:

- each channel has its own bounded queue and its own sender threads (at most ``workers``), so a
  dead SMTP server's backlog never holds a thread that Slack needs, and an outage cannot grow
  memory: when a channel's queue is full the oldest waiting notification is dropped (counted);
- notifications with the same fingerprint go out in order (a "resolved" never overtakes its
  "firing"), different alerts in parallel;
- a failed send is retried with exponential backoff and jitter; the final failure is logged
  once and counted once (``failure_counter(channel)``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from personal_assistant.workers.alerting.channels.base import (
    Channel,
    ChannelError,
    Notification,
    _describe,
)

logger = logging.getLogger(__name__)
DEFAULT_QUEUE_SIZE: Final = 1000


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
