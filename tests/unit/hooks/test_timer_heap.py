"""The timer-heap sweep: cancelled time-limit timers leave the heap before they fall due."""

from __future__ import annotations

import heapq
import time
from types import SimpleNamespace
from typing import Any

from kombu.asynchronous import Hub
from kombu.asynchronous.timer import Timer

from personal_assistant.workers.hooks.timer_heap import TimerHeapHook, drop_cancelled

HOUR = 3600.0


def armed_timers(count: int) -> tuple[Timer, list[Any]]:
    """A kombu timer with ``count`` entries due in an hour (as the pool arms time limits)."""
    timer = Timer()
    entries = [timer.call_after(HOUR + i, lambda: None) for i in range(count)]
    return timer, entries


def test_a_cancelled_timer_stays_in_kombus_heap_until_it_falls_due() -> None:
    # The cause, as kombu behaves: cancel() only flags the entry.
    timer, entries = armed_timers(10)
    for entry in entries:
        entry.cancel()
    assert len(timer._queue) == 10


def test_the_sweep_drops_cancelled_entries_and_keeps_the_live_ones_in_heap_order() -> None:
    timer, entries = armed_timers(1000)
    for i, entry in enumerate(entries):
        if i % 10:
            entry.cancel()
    heap = timer._queue

    assert drop_cancelled(heap) == 900

    assert timer._queue is heap  # the same list: the timer's iterator holds it
    assert len(heap) == 100
    assert all(not item[2].canceled for item in heap)
    popped = [heapq.heappop(heap)[0] for _ in range(len(heap))]
    assert popped == sorted(popped)


def test_a_heap_without_cancelled_entries_is_left_as_it_is() -> None:
    timer, _ = armed_timers(5)
    before = list(timer._queue)
    assert drop_cancelled(timer._queue) == 0
    assert timer._queue == before


def test_timers_still_fire_in_order_after_a_sweep() -> None:
    timer = Timer()
    fired: list[int] = []
    for i in range(6):
        entry = timer.call_after(0.001 * (6 - i), fired.append, (i,))
        if i % 2:
            entry.cancel()
    drop_cancelled(timer._queue)
    for _ in range(50):
        delay, entry = next(iter(timer))
        if entry is not None:
            entry()
        if len(fired) == 3:
            break
        if delay:
            time.sleep(delay)
    assert fired == [4, 2, 0]  # the live ones, earliest eta first


def test_the_hook_sweeps_the_consumers_loop_on_its_interval() -> None:
    hub = Hub()
    hook = TimerHeapHook(interval=0.01)
    hook.on_worker_ready(sender=SimpleNamespace(hub=hub))
    for _ in range(100):
        hub.call_later(HOUR, lambda: None).cancel()
    assert len(hub.timer._queue) == 101  # the sweep's own repeating entry, and 100 cancelled

    time.sleep(0.02)
    hub.fire_timers()  # what the worker's loop does each turn: the sweep is due

    assert hook.removed == 100
    assert len(hub.timer._queue) == 1  # the sweep, rescheduled
    assert not hub.timer._queue[0][2].canceled


def test_a_consumer_without_an_event_loop_gets_no_sweep() -> None:
    hook = TimerHeapHook()
    hook.on_worker_ready(sender=SimpleNamespace(hub=None))
    assert hook.removed == 0
