"""An active window: the days and hours, in a time zone, when a beat entry may run.

Pure. Written ``DAYS HH:MM-HH:MM ZONE`` (``mon-fri 09:00-17:00 Europe/Berlin``): days as names
(``mon``..``sun``), ranges and comma lists, or ``*`` for every day; the zone optional (UTC). The
start is inside the window and the end is not. An end before the start spans midnight
(``* 22:00-06:00``), and then the days name the day the window opens on. Business hours follow
the zone's wall clock through daylight-saving changes, because the check converts each run's
instant to the zone's local time.

A window that can never open (no day, or start equal to end) is refused when parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from personal_assistant.workers.ai.schedule import ScheduleError, parse_zone

_DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME: Final = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
EXAMPLE: Final = "mon-fri 09:00-17:00 Europe/Berlin"


class WindowError(ValueError):
    """A window that cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class ActiveWindow:
    """Days (0 = Monday) and a daily span of wall-clock time in ``zone``."""

    text: str
    days: frozenset[int]
    start: time
    end: time
    zone: ZoneInfo

    def contains(self, instant: datetime) -> bool:
        """True when the aware ``instant`` falls inside the window."""
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        local = instant.astimezone(self.zone)
        clock = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= clock < self.end
        # Spans midnight: the evening part belongs to today, the morning part to yesterday.
        if clock >= self.start:
            return local.weekday() in self.days
        if clock < self.end:
            return (local - timedelta(days=1)).weekday() in self.days
        return False


def _day(name: str, text: str) -> int:
    try:
        return _DAY_NAMES.index(name.lower())
    except ValueError:
        raise WindowError(
            f"window {text!r}: unknown day {name!r} (use {', '.join(_DAY_NAMES)})"
        ) from None


def _parse_days(part: str, text: str) -> frozenset[int]:
    if part == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for item in part.split(","):
        first, sep, last = item.partition("-")
        if not sep:
            days.add(_day(first, text))
            continue
        start, end = _day(first, text), _day(last, text)
        # A range may wrap the week (fri-mon): walk forward from start to end.
        day = start
        days.add(day)
        while day != end:
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days)


def _parse_time(part: str, text: str) -> time:
    match = _TIME.match(part)
    if not match:
        raise WindowError(f"window {text!r}: {part!r} is not a time HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


def parse_window(text: object) -> ActiveWindow:
    """An :class:`ActiveWindow` from ``DAYS HH:MM-HH:MM [ZONE]``, or WindowError saying why."""
    if not isinstance(text, str):
        raise WindowError(f"a window is text such as {EXAMPLE!r}, got {type(text).__name__}")
    parts = text.split()
    if len(parts) not in {2, 3}:
        raise WindowError(f"window {text!r}: write it as DAYS HH:MM-HH:MM [ZONE], e.g. {EXAMPLE!r}")
    days = _parse_days(parts[0], text)
    first, sep, last = parts[1].partition("-")
    if not sep:
        raise WindowError(f"window {text!r}: the hours are a span HH:MM-HH:MM")
    start, end = _parse_time(first, text), _parse_time(last, text)
    if start == end:
        raise WindowError(f"window {text!r} never opens: it starts when it ends")
    try:
        zone = parse_zone(parts[2] if len(parts) == 3 else "UTC")
    except ScheduleError as exc:
        raise WindowError(f"window {text!r}: {exc}") from None
    return ActiveWindow(text=" ".join(parts), days=days, start=start, end=end, zone=zone)
