"""Chaos for delivery tests: whole worker process groups SIGKILLed at random, and what it cost.

A run publishes counting tasks (each adds one to its own field of the hash ``chaos:runs``),
lets workers drain them, and every 1 to 2.5 s SIGKILLs a random worker's process group (a lost
host) and starts a new one in its place. Right after each kill, before anything can be put
back, it records which tasks the killed worker held: with the reliable fetch, the entries of the
custody hash owned by its consumers (their ids start with the worker's pid); with plain kombu,
every unacked entry (there is no owner). A task that ran twice is excused only if it was held
by a killed worker; a task that never ran is lost.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from tests.support.worker import WorkerProcess

RUNS_KEY = "chaos:runs"
OWNER_KEY = "pa:broker:owner"

# Delivery settings small enough for a bounded test: a worker silent for 3 s is dead and its
# messages go back within about a second more; the visibility timeout (5 s) is the backstop.
FAST_RECOVERY = {
    "TASK_TIME_LIMIT": "4",
    "TASK_SOFT_TIME_LIMIT": "3",
    "MAX_COUNTDOWN": "2",
    "RETRY_BACKOFF_MAX": "2",
    "VISIBILITY_TIMEOUT": "5",
    "UNACKED_RESTORE_INTERVAL": "1",
    "UNACKED_RESTORE_THROTTLE": "1",
    "WORKER_HEARTBEAT_INTERVAL": "1",
    "WORKER_DOWN_AFTER": "3",
}


@dataclass
class HeldTask:
    """A task message a killed worker held: its task name, args and kwargs."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]


@dataclass
class ChaosReport:
    """What a chaos run did and what it cost."""

    kills: int = 0
    held: list[HeldTask] = field(default_factory=list)
    duration: float = 0.0

    def held_args(self, name: str) -> set[Any]:
        """First positional argument of every held message of task ``name``."""
        return {task.args[0] for task in self.held if task.name == name and task.args}

    def held_kwarg(self, name: str, key: str) -> set[Any]:
        """Keyword argument ``key`` of every held message of task ``name``."""
        return {task.kwargs.get(key) for task in self.held if task.name == name}


def decode_entry(entry: bytes) -> HeldTask | None:
    """The task in an ``unacked`` entry (``[message, exchange, routing_key]``), if readable."""
    try:
        message = json.loads(entry)[0]
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        return HeldTask(str(message["headers"]["task"]), list(args), dict(kwargs))
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def held_by(client: redis.Redis, pid: int | None) -> list[HeldTask]:
    """Tasks in custody of the consumers of worker ``pid`` (None: every unacked entry)."""
    if pid is None:
        tags = list(cast("dict[bytes, bytes]", client.hgetall("unacked")))
    else:
        owners = cast("dict[bytes, bytes]", client.hgetall(OWNER_KEY))
        tags = [tag for tag, owner in owners.items() if owner.startswith(f"{pid}-".encode())]
    if not tags:
        return []
    entries = cast("list[bytes | None]", client.hmget("unacked", tags))
    return [task for e in entries if e is not None and (task := decode_entry(e)) is not None]


def run_chaos(
    client: redis.Redis,
    start: Callable[[], WorkerProcess],
    *,
    workers: int,
    kills: int,
    done: Callable[[], bool],
    owners: bool = True,
    rng: random.Random | None = None,
    timeout: float = 240.0,
) -> ChaosReport:
    """Start ``workers`` workers, kill and replace one ``kills`` times at random intervals,
    then wait until ``done()`` (or ``timeout``). Stops every worker it started."""
    rng = rng or random.Random()
    report = ChaosReport()
    began = time.monotonic()
    running = [start() for _ in range(workers)]
    try:
        while report.kills < kills and not done():
            time.sleep(rng.uniform(1.0, 2.5))
            victim = running.pop(rng.randrange(len(running)))
            pid = victim.process.pid if victim.process else None
            victim.kill_hard()
            report.kills += 1
            report.held += held_by(client, pid if owners else None)
            running.append(start())
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for worker in running:
            worker.terminate()
        for worker in running:
            worker.stop()
    report.duration = time.monotonic() - began
    return report


def run_counts(client: redis.Redis, total: int) -> tuple[list[int], dict[int, int]]:
    """Tasks 0..total-1 that never ran, and those that ran more than once (with their runs)."""
    raw = cast("dict[bytes, bytes]", client.hgetall(RUNS_KEY))
    runs = {int(k): int(v) for k, v in raw.items()}
    lost = [i for i in range(total) if runs.get(i, 0) == 0]
    repeated = {i: n for i, n in runs.items() if n > 1}
    return lost, repeated


def all_ran(client: redis.Redis, total: int) -> Callable[[], bool]:
    """``done`` for :func:`run_chaos`: every counting task ran at least once."""
    return lambda: int(client.hlen(RUNS_KEY)) >= total


def unexcused(repeated: Iterable[int], report: ChaosReport, name: str) -> list[int]:
    """Repeated tasks that no killed worker held: repeats the guarantee does not allow."""
    held = report.held_args(name)
    return sorted(i for i in repeated if i not in held)


def settled(client: redis.Redis, total: int, lists: list[str]) -> Callable[[], bool]:
    """``done`` for a transport that may lose messages: every task ran, or nothing is left to
    run (the queue's lists and ``unacked`` are empty, twice in a row a second apart)."""
    empty_since: list[float] = []

    def done() -> bool:
        if int(client.hlen(RUNS_KEY)) >= total:
            return True
        waiting = sum(int(client.llen(name)) for name in lists) + int(client.hlen("unacked"))
        if waiting:
            empty_since.clear()
            return False
        empty_since.append(time.monotonic())
        return empty_since[-1] - empty_since[0] >= 1.0

    return done
