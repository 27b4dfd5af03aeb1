"""When a beat entry runs: its times, its jitter, and what a due entry does now.

Pure: instants are Unix seconds (floats), the clock is an argument. An entry's *times* are the
instants its schedule names (cron in its time zone, or its interval's phase); each time is
claimed once in Redis, so these functions must give every beat, and a restarted one, the same
answer for the same entry: nothing here depends on when or where it is asked, except ``now``.

:func:`plan` is the decision for an entry found due: which time it fires for, what it skips,
and its next time. Catch-up follows the entry's misfire policy: after a beat outage (or a lock
handover) the times that passed collapse into the latest one, which runs once (``run_once``)
or, if it is later than ``misfire_grace``, is skipped (``skip``). The collapsed times are
counted as skips with reason ``missed``, so an operator sees what an outage cost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

from personal_assistant.workers.ai.schedule import ScheduleError, next_cron_time
from personal_assistant.workers.schedulers.beat_entry import BeatEntry, EntryError

# Catching up a cron entry walks its times one by one; an every-minute entry after a year's
# outage is half a million of them. Past this many the walk jumps to "the last time before now"
# by asking from a day back, then walks the rest (at most a day of an every-minute entry).
MAX_CATCH_UP_STEPS: Final = 2_000
# How far ahead a window check looks for one run inside the window: a week covers every
# weekday and hour pattern a window can name; an every-minute cron has 11,520 times in 8 days.
WINDOW_PROBE_RUNS: Final = 12_000
WINDOW_PROBE_S: Final = 8 * 86_400.0

# Gaps between a cron entry's times looked at when checking its jitter (the week's runs of an
# every-five-minutes cron; a tighter cron's smallest gap shows in its first few times anyway).
JITTER_PROBE_RUNS: Final = 2_100

SKIP_REASONS: Final[tuple[str, ...]] = ("missed", "misfire", "window", "overlap", "backlog")


@dataclass(frozen=True)
class Plan:
    """What a due entry does now: fire for ``due`` unless ``skip`` says why not; then wait
    for ``next_due`` (its nominal time; it is sent at ``next_due + jitter``)."""

    due: float
    next_due: float
    missed: int
    skip: str | None


def _instant(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def next_time(entry: BeatEntry, after: float) -> float:
    """The entry's first time strictly after ``after``. An interval keeps its phase: pass a
    time of the entry to get the one after it."""
    if entry.interval is not None:
        return after + entry.interval
    assert entry.cron is not None  # entry_from_data guarantees one of the two
    return next_cron_time(entry.cron, ZoneInfo(entry.timezone), _instant(after)).timestamp()


def first_time(entry: BeatEntry, now: float) -> float:
    """The first time of an entry seen for the first time at ``now``: its next cron time, or
    one interval from now (as Celery's beat does: an interval entry does not run at start)."""
    return next_time(entry, now)


def jitter_offset(entry: BeatEntry, due: float) -> float:
    """How long after ``due`` the run is sent: in [0, jitter), the same on every beat."""
    if entry.jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{entry.name}|{due!r}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * entry.jitter


def send_at(entry: BeatEntry, due: float) -> float:
    """When the run due at ``due`` is sent (its time plus its jitter)."""
    return due + jitter_offset(entry, due)


def latest_time(entry: BeatEntry, due: float, now: float) -> tuple[float, int]:
    """The latest of the entry's times from ``due`` up to ``now`` and how many times before it
    were passed over. ``due`` itself when it is the only one (or still in the future)."""
    if now <= due:
        return due, 0
    if entry.interval is not None:
        steps = int((now - due) // entry.interval)
        return due + steps * entry.interval, steps
    latest, missed = due, 0
    for _ in range(MAX_CATCH_UP_STEPS):
        following = next_time(entry, latest)
        if following > now:
            return latest, missed
        latest, missed = following, missed + 1
    # A long outage: restart the walk a day before now, looking further back (four times as
    # far each time) while that day holds no time. The times in between are not walked, so
    # ``missed`` then undercounts; the run itself is still the latest time.
    walked, lookback = latest, 86_400.0
    while True:
        start = max(walked, now - lookback)
        latest = next_time(entry, start)
        if latest <= now:
            break
        if start == walked:
            return walked, missed
        lookback *= 4
    while (following := next_time(entry, latest)) <= now:
        latest, missed = following, missed + 1
    return latest, missed + 1


def plan(entry: BeatEntry, due: float, now: float) -> Plan:
    """The decision for ``entry``, whose next time ``due`` has come, at ``now``.

    Skips decided here: ``misfire`` (policy ``skip`` and the run is later than the grace) and
    ``window`` (the time is outside the entry's active window). ``overlap`` and ``backlog``
    need the broker and are the scheduler's to add.
    """
    fire, missed = latest_time(entry, due, now)
    following = next_time(entry, fire)
    skip = None
    if entry.misfire == "skip" and now - send_at(entry, fire) > entry.misfire_grace:
        skip = "misfire"
    elif entry.window is not None and not entry.window.contains(_instant(fire)):
        skip = "window"
    return Plan(due=fire, next_due=following, missed=missed, skip=skip)


def check_jitter_fits(entry: BeatEntry, now: float) -> None:
    """Raise :class:`EntryError` if a cron entry's jitter is not shorter than the gap between
    two of its times in the coming week: a run could then be sent after the next is due."""
    if entry.jitter <= 0 or entry.cron is None:
        return  # an interval's jitter is checked against the interval when parsed
    moment = next_time(entry, now)
    for _ in range(JITTER_PROBE_RUNS):
        following = next_time(entry, moment)
        if following - moment <= entry.jitter:
            raise EntryError(
                entry.name,
                f"jitter ({entry.jitter:g} s) must be shorter than the {following - moment:g} s "
                f"between two of its times",
            )
        if following - now > WINDOW_PROBE_S:
            return
        moment = following


def check_window_opens(entry: BeatEntry, now: float, *, new: bool = True) -> None:
    """Raise :class:`EntryError` if none of the entry's times in the coming week falls inside
    its window (``0 3 * * *`` with business hours never runs; nor does a ``new`` daily interval
    started outside a five-minute window)."""
    if entry.window is None or (entry.interval is not None and not new):
        return
    # A ``new`` interval entry's phase is set when beat first plans it, within a tick of now:
    # probing from now catches a daily interval that always falls outside a short window. An
    # entry beat planned before keeps the phase it had, which now says nothing about.
    moment = now
    try:
        for _ in range(WINDOW_PROBE_RUNS):
            moment = next_time(entry, moment)
            if entry.window.contains(_instant(moment)):
                return
            if moment - now > WINDOW_PROBE_S:
                break
    except ScheduleError as exc:
        raise EntryError(entry.name, str(exc)) from None
    raise EntryError(
        entry.name,
        f"window {entry.window.text!r} never opens for {entry.describe_schedule()} "
        "(no run inside it in a week)",
    )
