"""Worker and beat liveness, read by the operators' tools from Redis.

Everything here is measured in Redis, not in a worker's memory, so it stays true across the
prefork pool, across restarts, and after a worker is killed with SIGKILL (no shutdown code runs
then, so liveness is a heartbeat that stops, never a "goodbye" that might not be sent).

Keys (all in the broker's Redis database; keys.py says what each holds and what bounds it):

- ``keys.WORKERS_SEEN_KEY``: sorted set hostname -> last heartbeat (Unix time).
- ``keys.worker_info_key(hostname)``: hash of queues, pid, started_at, extra, stopped; TTL
  retention.
- ``keys.BEAT_TICK_KEY``: the beat scheduler's last tick (Unix time).

A worker's task-count snapshots and the rates computed from them live in metrics/snapshots.py.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.metrics.snapshots import DEFAULT_RETENTION_S, _json_or, _text

logger = logging.getLogger(__name__)

# Defaults and their reasons: constants.py (Liveness).
DEFAULT_DOWN_AFTER_S = c.WORKER_DOWN_AFTER_S
DEFAULT_HEARTBEAT_INTERVAL_S = c.HEARTBEAT_INTERVAL_S


# --- Worker liveness ------------------------------------------------------------------------

# One round trip, atomic: record the beat, restart `started_at` when the pid changed (a new
# process under the same hostname), refresh the TTL, and prune workers silent for longer than
# the retention, so the set stays bounded even if nobody ever runs `status`.
_BEAT_SCRIPT = """
local seen, info = KEYS[1], KEYS[2]
local host, now, queues, pid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local extra, retention = ARGV[5], ARGV[6]
redis.call('ZADD', seen, now, host)
redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. tostring(tonumber(now) - tonumber(retention)))
local old_pid = redis.call('HGET', info, 'pid')
if old_pid ~= pid or redis.call('HGET', info, 'stopped') == '1'
   or redis.call('HEXISTS', info, 'started_at') == 0 then
  redis.call('HSET', info, 'started_at', now)
end
redis.call('HSET', info, 'queues', queues, 'pid', pid, 'extra', extra, 'stopped', '0')
redis.call('EXPIRE', info, math.ceil(tonumber(retention)))
return 1
"""


@dataclass(frozen=True)
class WorkerLiveness:
    """One worker as the registry last saw it."""

    hostname: str
    last_seen: float
    up: bool
    age_seconds: float
    queues: list[str] = field(default_factory=list)
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The worker shut down cleanly (``forget``): down on purpose, nothing to alert on.
    stopped: bool = False
    started_at: float | None = None

    @property
    def state(self) -> str:
        """``up``, ``stopped`` (clean shutdown) or ``down`` (silent: crashed, killed, cut off)."""
        if self.up:
            return "up"
        return "stopped" if self.stopped else "down"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for ``status --json``)."""
        return {
            "hostname": self.hostname,
            "state": self.state,
            "up": self.up,
            "stopped": self.stopped,
            "last_seen": self.last_seen,
            "age_seconds": self.age_seconds,
            "queues": list(self.queues),
            "pid": self.pid,
            "started_at": self.started_at,
            "extra": dict(self.extra),
        }


def _float_or_none(value: bytes | str | None) -> float | None:
    raw = _text(value)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


class WorkerRegistry:
    """Heartbeats of the workers in Redis: who is up, who went silent, who stopped cleanly."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        down_after: float = DEFAULT_DOWN_AFTER_S,
        retention: float = DEFAULT_RETENTION_S,
        seen_key: str = keys.WORKERS_SEEN_KEY,
        info_prefix: str = keys.WORKER_INFO_PREFIX,
    ) -> None:
        if down_after <= 0 or retention <= down_after:
            raise ValueError(
                f"need 0 < down_after < retention (got down_after={down_after}, "
                f"retention={retention}): a worker must show as down before it is pruned"
            )
        self.client = client
        self.down_after = down_after
        self.retention = retention
        self.seen_key = seen_key
        self.info_prefix = info_prefix
        self._beat = client.register_script(_BEAT_SCRIPT)

    def info_key(self, hostname: str) -> str:
        """The hash holding one worker's details."""
        return f"{self.info_prefix}{hostname}"

    def beat(
        self,
        hostname: str,
        *,
        queues: Sequence[str],
        pid: int,
        now: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record that ``hostname`` is alive now (one atomic round trip)."""
        ts = time.time() if now is None else now
        self._beat(
            keys=[self.seen_key, self.info_key(hostname)],
            args=[
                hostname,
                repr(float(ts)),
                json.dumps(list(queues)),
                str(int(pid)),
                json.dumps(dict(extra or {}), default=repr),
                repr(float(self.retention)),
            ],
        )

    def forget(self, hostname: str, *, now: float | None = None) -> None:
        """Mark ``hostname`` as cleanly stopped (call it after ``Heartbeat.stop()``).

        Kept, not removed: ``status`` can then tell a scale-down ("stopped") from a crash
        ("down"), and a worker that vanished without trace cannot be confused with one that
        never existed. Nobody is paged for it: exporters list workers with
        ``include_stopped=False`` (the default), so a stopped worker has no
        ``celery_worker_up`` series and ``== 0`` alerts cannot fire; the entry is pruned after
        ``retention`` like any other. A later heartbeat from the same hostname clears the flag.
        """
        ts = time.time() if now is None else now
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(self.seen_key, {hostname: ts})
        pipe.hset(self.info_key(hostname), mapping={"stopped": "1", "stopped_at": repr(ts)})
        pipe.expire(self.info_key(hostname), int(self.retention + 0.999))
        pipe.execute()

    def remove(self, hostname: str) -> None:
        """Drop every trace of ``hostname`` (an operator cleaning up a decommissioned host)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.seen_key, hostname)
        pipe.delete(self.info_key(hostname))
        pipe.execute()

    def workers(
        self, now: float | None = None, *, include_stopped: bool = False
    ) -> list[WorkerLiveness]:
        """Every worker seen within ``retention``, by hostname; silent ones have ``up=False``.

        Workers that shut down cleanly are left out unless ``include_stopped`` (``status`` shows
        them; metric exporters should not, so a scale-down does not page).
        """
        ts = time.time() if now is None else now
        self.client.zremrangebyscore(self.seen_key, "-inf", f"({ts - self.retention!r}")
        seen = cast(
            "list[tuple[bytes, float]]",
            self.client.zrange(self.seen_key, 0, -1, withscores=True),
        )
        if not seen:
            return []
        pipe = self.client.pipeline(transaction=False)
        for member, _ in seen:
            pipe.hgetall(self.info_key(_text(member) or ""))
        infos = cast("list[dict[bytes, bytes]]", pipe.execute())
        result = []
        for (member, last_seen), info in zip(seen, infos, strict=True):
            stopped = _text(info.get(b"stopped")) == "1"
            if stopped and not include_stopped:
                continue
            age = max(0.0, ts - float(last_seen))
            pid = _text(info.get(b"pid"))
            result.append(
                WorkerLiveness(
                    hostname=_text(member) or "",
                    last_seen=float(last_seen),
                    up=age <= self.down_after and not stopped,
                    age_seconds=age,
                    queues=list(_json_or(info.get(b"queues"), [])),
                    pid=int(pid) if pid and pid.isdigit() else None,
                    extra=dict(_json_or(info.get(b"extra"), {})),
                    stopped=stopped,
                    started_at=_float_or_none(info.get(b"started_at")),
                )
            )
        return sorted(result, key=lambda w: w.hostname)


class Heartbeat:
    """A daemon thread that beats for one worker every ``interval`` seconds.

    It never raises into the worker: a Redis error is logged (once per outage, with the
    recovery logged too) and the next beat is tried one interval later. ``touch()`` is for the
    consumer loop to say "I moved"; ``health()`` turns that into the /healthz answer.

    Shutdown order for a clean stop: ``heartbeat.stop()`` (joins, so no beat can follow), then
    ``registry.forget(hostname)``. Give the registry a client with short socket timeouts (a few
    seconds): a beat blocked on a dead Redis delays the next one and ``stop()``.
    """

    def __init__(
        self,
        registry: WorkerRegistry,
        hostname: str,
        queues: Sequence[str],
        interval: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        *,
        extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be positive (got {interval})")
        self.registry = registry
        self.hostname = hostname
        self.queues = list(queues)
        self.interval = interval
        self.extra = extra
        self.beats = 0
        self.failures = 0
        self.last_error: str | None = None
        self._last_beat: float | None = None  # monotonic time of the last successful beat
        self._touched = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # The consumer loop's side ------------------------------------------------------------------

    def touch(self) -> None:
        """Record that the consumer loop moved (cheap: one monotonic read, no I/O)."""
        self._touched = time.monotonic()

    def seconds_since_touch(self) -> float:
        """Seconds since the last ``touch()`` (or since construction)."""
        return time.monotonic() - self._touched

    def seconds_since_beat(self) -> float | None:
        """Seconds since the last heartbeat Redis accepted, None before the first one."""
        return None if self._last_beat is None else time.monotonic() - self._last_beat

    @property
    def alive(self) -> bool:
        """The beating thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def health(self, max_silence: float) -> tuple[bool, str]:
        """Liveness for /healthz: the thread runs and the consumer loop moved recently.

        A Redis outage does not fail liveness (restarting the worker would not fix Redis); it
        belongs to readiness, which checks the broker itself.
        """
        if not self.alive:
            return False, "heartbeat thread is not running"
        silent = self.seconds_since_touch()
        if silent > max_silence:
            return False, f"consumer loop has not moved for {silent:.0f}s (limit {max_silence:g}s)"
        return True, "ok"

    # The thread --------------------------------------------------------------------------------

    def start(self) -> Heartbeat:
        """Start beating (the first beat is immediate); a second call does nothing."""
        if self.alive:
            return self
        self._stop.clear()
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=self._run, name=f"pa-heartbeat-{self.hostname}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop beating and wait for the thread (at most ``timeout``, default 2 intervals + 5s)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.interval * 2 + 5.0 if timeout is None else timeout)

    def beat_once(self) -> bool:
        """One heartbeat now; True when Redis took it. Never raises."""
        try:
            extra = dict(self.extra()) if self.extra is not None else None
            self.registry.beat(self.hostname, queues=self.queues, pid=self._pid, extra=extra)
        except Exception as exc:
            self.failures += 1
            if self.last_error is None:
                logger.warning(
                    "heartbeat of %s failed, retrying every %gs: %s",
                    self.hostname,
                    self.interval,
                    exc,
                )
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        if self.last_error is not None:
            logger.info("heartbeat of %s recovered after %s", self.hostname, self.last_error)
            self.last_error = None
        self.beats += 1
        self._last_beat = time.monotonic()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat_once()
            self._stop.wait(self.interval)


# --- Beat liveness --------------------------------------------------------------------------


class BeatLiveness:
    """When the beat scheduler last ticked; the beat container's healthcheck reads the age."""

    def __init__(self, client: redis.Redis, key: str = keys.BEAT_TICK_KEY) -> None:
        self.client = client
        self.key = key

    def tick(self, now: float | None = None) -> None:
        """Record a tick of the scheduler loop."""
        self.client.set(self.key, repr(float(time.time() if now is None else now)))

    def last_tick(self) -> float | None:
        """Unix time of the last tick, None if beat never ticked here."""
        return _float_or_none(cast("bytes | None", self.client.get(self.key)))

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the last tick (never negative), None if beat never ticked."""
        last = self.last_tick()
        if last is None:
            return None
        return max(0.0, (time.time() if now is None else now) - last)
