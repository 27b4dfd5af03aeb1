"""Helpers of the beat tests: a scheduler on a test app with given entries and a clock the test
moves, and the runs beat published, read back from the broker's Redis lists."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import redis_list_names
from personal_assistant.workers.schedulers.enhanced_scheduler import EnhancedScheduler
from personal_assistant.workers.schedulers.run_send import DUE_HEADER, ENTRY_HEADER
from personal_assistant.workers.worker_app import WorkerApp

CHEAP_TASK = f"{c.TASKS_PACKAGE}.maintenance_tasks.sweep_workflow_timeouts"
CHEAP_QUEUE = c.MAINTENANCE_QUEUE
# 2026-12-02 09:00:00 UTC, a Wednesday: a fixed start for tests that move the clock.
T0 = 1_796_202_000.0


@dataclass(frozen=True)
class SentRun:
    """One message beat published: its task id, entry and due time (from its headers)."""

    task_id: str
    task: str
    entry: str
    due: float
    priority: int | None


class Clock:
    """A clock the test moves; a scheduler reads it through ``clock``."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward and return the new time."""
        self.now += seconds
        return self.now


def sent_runs(client: redis.Redis, queue: str = CHEAP_QUEUE) -> list[SentRun]:
    """Every message waiting in ``queue`` (all its priority lists), oldest first."""
    runs: list[SentRun] = []
    for name in redis_list_names(queue):
        for raw in reversed(client.lrange(name, 0, -1)):  # LPUSH: the oldest is last
            message = json.loads(raw)
            headers: Mapping[str, Any] = message["headers"]
            runs.append(
                SentRun(
                    task_id=str(headers["id"]),
                    task=str(headers["task"]),
                    entry=str(headers.get(ENTRY_HEADER, "")),
                    due=float(headers.get(DUE_HEADER, "nan")),
                    priority=message["properties"].get("priority"),
                )
            )
    return runs


def entry_data(**fields: Any) -> dict[str, Any]:
    """An entry of the cheap task every second, with ``fields`` changed."""
    data: dict[str, Any] = {"task": CHEAP_TASK, "interval": 1.0}
    data.update(fields)
    return data


MakeScheduler = Callable[..., EnhancedScheduler]


def scheduler_factory(
    app_for: Callable[[], WorkerApp], clock: Clock | None
) -> tuple[MakeScheduler, Callable[[], None]]:
    """A factory of schedulers (entries given as name -> data) and the function closing them."""
    made: list[EnhancedScheduler] = []

    def make(
        entries: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        lock_timeout: float = 30.0,
        app: WorkerApp | None = None,
    ) -> EnhancedScheduler:
        the_app = app or app_for()
        if entries is not None:
            the_app.conf.beat_schedule = {}
            the_app.conf.pa_beat_entries = {name: dict(data) for name, data in entries.items()}
        scheduler = EnhancedScheduler(app=the_app, lock_timeout=lock_timeout)
        if clock is not None:
            scheduler.clock = clock
        made.append(scheduler)
        return scheduler

    def close() -> None:
        for scheduler in made:
            scheduler.close()

    return make, close


def tick_until_idle(scheduler: EnhancedScheduler, limit: int = 20) -> float:
    """Tick until the scheduler asks to sleep (nothing more to do now); return that sleep."""
    for _ in range(limit):
        wait = scheduler.tick()
        if wait > 0:
            return wait
    raise AssertionError(f"the scheduler still had work after {limit} ticks")


def drive(
    schedulers: list[EnhancedScheduler], clock: Clock, seconds: int, step: float = 1.0
) -> Iterator[float]:
    """Tick every scheduler until idle now, then move the clock ``seconds`` in ``step``s,
    ticking them all until idle after each step."""
    end = clock.now + seconds
    for scheduler in schedulers:
        tick_until_idle(scheduler)
    while clock.now < end:
        clock.advance(step)
        for scheduler in schedulers:
            tick_until_idle(scheduler)
        yield clock.now
