"""An AI job's schedule: a cron expression in a time zone, or a fixed interval; its next run.

Pure: no Redis, Celery or store. :func:`parse_schedule` checks what a user wrote (one clear
:class:`ScheduleError` per mistake) and :meth:`Schedule.next_after` says when the job runs next.

Cron expressions have the five standard fields, in cron's order: minute, hour, day of month,
month, day of week (0 or 7 = Sunday; names ``jan``..``dec`` and ``sun``..``sat`` too), each a
``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those; the
macros ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly``
(``@annually``) stand for their usual expressions. As in Vixie cron, when both day fields are
restricted (neither starts with ``*``) a day matches if *either* does: ``0 9 1 * mon`` runs on
the 1st and on every Monday.

The fields are wall-clock times in the job's IANA time zone, so a daily 09:00 job in
Europe/Berlin runs at 09:00 local time in winter and in summer. Around daylight-saving changes:

- a local time that occurs twice (clocks go back: 02:30 on the last Sunday of October in
  Berlin) runs once, at its first occurrence. An hourly cron job therefore skips the repeated
  hour; a job that must run every elapsed hour uses an interval.
- a local time that does not exist (clocks go forward: 02:30 on the last Sunday of March in
  Berlin) runs at the moment the clocks jump (03:00 local time); several such times collapse
  into that one run.

An interval counts elapsed seconds from the run before (the time zone plays no part), so
``interval_seconds=3600`` runs every real hour, DST or not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

MIN_INTERVAL_S = 60
"""The shortest interval: beat looks for due jobs every few minutes, and a model call takes
seconds to minutes, so a shorter interval would only pile runs up behind each other."""

MAX_INTERVAL_S = 366 * 24 * 3600
"""The longest interval (a year): longer waits are dates, which a cron expression says better."""

MAX_CRON_LENGTH = 128
"""The longest cron expression (the store's column); real ones are under 40 characters."""

MAX_ZONE_LENGTH = 64
"""The longest time-zone name (the store's column); the longest IANA name has 32 characters."""

SEARCH_DAYS = 8 * 366 + 1
"""How far ahead a next run is looked for: 29 February recurs at most eight years apart (2096
to 2104), so an expression that matches no day in this span never runs."""

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# The most days each month can have (February in a leap year), to refuse "31 2" up front.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    # The number the first name stands for (jan = 1, sun = 0).
    first_name_value: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day of week", 0, 7, _WEEKDAYS, 0),
)


def _field_value(text: str, field: _Field, expression: str) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.first_name_value
    if not text.isdigit() or not text.isascii():
        raise ScheduleError(f"cron {expression!r}: {field.name} {text!r} is not a number")
    value = int(text)
    if not field.low <= value <= field.high:
        raise ScheduleError(
            f"cron {expression!r}: {field.name} {value} is outside {field.low}-{field.high}"
        )
    return value


def _parse_field(text: str, field: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not step_text.isascii() or int(step_text) < 1:
                raise ScheduleError(
                    f"cron {expression!r}: {field.name} step {step_text!r} must be a number >= 1"
                )
            step = int(step_text)
        if base == "*":
            start, end = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _field_value(first, field, expression)
            end = _field_value(last, field, expression)
            if start > end:
                raise ScheduleError(
                    f"cron {expression!r}: {field.name} range {base!r} runs backwards"
                )
        elif slash:
            raise ScheduleError(
                f"cron {expression!r}: {field.name} step {item!r} needs a range or * before '/'"
            )
        elif not base:
            raise ScheduleError(f"cron {expression!r}: empty {field.name} in {text!r}")
        else:
            start = end = _field_value(base, field, expression)
        values.update(range(start, end + 1, step))
    if field.name == "day of week" and 7 in values:
        values = (values - {7}) | {0}  # 7 is Sunday too, as in most crons
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed five-field cron expression (see the module doc for the syntax)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    # 0 = Sunday ... 6 = Saturday.
    weekdays: frozenset[int]
    # Both day fields restricted: a day matches when either does (Vixie cron's rule).
    either_day: bool

    def matches_day(self, day: date) -> bool:
        """True when the expression runs on ``day`` (at its hours and minutes)."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.weekday() + 1) % 7 in self.weekdays
        return by_date or by_weekday if self.either_day else by_date and by_weekday


def parse_cron(text: object) -> CronExpression:
    """Parse a cron expression (five fields or a macro), or raise ScheduleError saying why."""
    if not isinstance(text, str):
        raise ScheduleError(f"cron must be text such as '0 9 * * *', got {type(text).__name__}")
    expression = " ".join(text.split())
    if len(expression) > MAX_CRON_LENGTH:
        raise ScheduleError(f"cron is longer than {MAX_CRON_LENGTH} characters")
    expanded = _MACROS.get(expression.lower(), expression)
    if expanded.startswith("@"):
        raise ScheduleError(f"cron {expression!r}: unknown macro (use one of {', '.join(_MACROS)})")
    parts = expanded.split(" ")
    if len(parts) != len(_FIELDS) or not expanded:
        raise ScheduleError(
            f"cron {expression!r} has {len(parts) if expanded else 0} fields; it needs 5: "
            "minute hour day-of-month month day-of-week (e.g. '0 9 * * mon-fri')"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(part, field, expression) for part, field in zip(parts, _FIELDS, strict=True)
    )
    cron = CronExpression(
        text=expression,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=days,
        months=months,
        weekdays=weekdays,
        either_day=not parts[2].startswith("*") and not parts[4].startswith("*"),
    )
    if not cron.either_day and min(days) > max(_MONTH_DAYS[m - 1] for m in months):
        raise ScheduleError(f"cron {expression!r} never runs: no such day in its month(s)")
    return cron


# Files of the system's zoneinfo directory that are not IANA zones: "localtime" is whatever
# the host is set to, which differs between the hosts of one cluster.
_NOT_ZONES = frozenset({"localtime", "posixrules"})


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def parse_zone(name: object) -> ZoneInfo:
    """The IANA time zone ``name`` (such as ``Europe/Berlin``), or ScheduleError."""
    if not isinstance(name, str) or not name:
        raise ScheduleError("timezone must be an IANA name such as 'Europe/Berlin' or 'UTC'")
    if len(name) > MAX_ZONE_LENGTH or name not in _zone_names():
        shown = name[:MAX_ZONE_LENGTH]
        raise ScheduleError(
            f"unknown time zone {shown!r}: give an IANA name such as 'Europe/Berlin' or 'UTC'"
        )
    return ZoneInfo(name)


def check_interval(seconds: object) -> int:
    """``seconds`` as an interval in whole seconds within the allowed range, or ScheduleError."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise ScheduleError(f"interval must be whole seconds, got {type(seconds).__name__}")
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ScheduleError(
            f"interval must be between {MIN_INTERVAL_S} s and {MAX_INTERVAL_S} s (a year), "
            f"got {seconds} s"
        )
    return seconds


def local_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of the naive local time ``wall`` in ``zone``, with the DST rules of the
    module doc: the first of two occurrences; for a time the clocks skipped, the jump."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap: fold=0 reads ``wall`` with the offset before the jump (an instant after it),
    # fold=1 with the offset after (an instant before it). Bisect for the jump between them.
    before = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    after = int(first.timestamp())
    new_offset = first.astimezone(zone).utcoffset()
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == new_offset:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


def next_cron_time(cron: CronExpression, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant strictly after ``after`` (aware) at which ``cron`` runs in ``zone``."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    # local_to_instant never runs backwards as wall time advances, so the first match whose
    # instant is past ``after`` is the earliest one; no wall time before ``after``'s can be.
    start = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    day = start.date()
    for _ in range(SEARCH_DAYS):
        if cron.matches_day(day):
            for hour in cron.hours:
                if day == start.date() and hour < start.hour:
                    continue
                for minute in cron.minutes:
                    wall = datetime.combine(day, time(hour, minute))
                    if wall < start:
                        continue
                    instant = local_to_instant(wall, zone)
                    if instant > after:
                        return instant
        day += timedelta(days=1)
    raise ScheduleError(f"cron {cron.text!r} never runs (no matching day in eight years)")


@dataclass(frozen=True)
class Schedule:
    """When a job runs: exactly one of ``cron`` and ``interval``; ``zone`` for the cron."""

    cron: CronExpression | None
    interval: timedelta | None
    zone: ZoneInfo

    def next_after(self, instant: datetime) -> datetime:
        """The job's next run strictly after ``instant`` (aware), in UTC."""
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        if self.interval is not None:
            return (instant + self.interval).astimezone(UTC)
        assert self.cron is not None  # parse_schedule guarantees one of the two
        return next_cron_time(self.cron, self.zone, instant)

    def next_run(self, previous_due: datetime, now: datetime) -> datetime:
        """The run after one that was due at ``previous_due`` and finished at ``now``: the
        first scheduled time after ``now``, so a job that was down for days runs once, not
        once per missed time. An interval keeps its phase (due + k intervals), so late runs
        (beat looks every few minutes) do not push every later run back."""
        if self.interval is None or previous_due.tzinfo is None:
            return self.next_after(now)
        missed = (now - previous_due) // self.interval
        following = previous_due + (max(missed, 0) + 1) * self.interval
        return following.astimezone(UTC)

    def describe(self) -> str:
        """One line for logs and errors: ``cron '0 9 * * *' in Europe/Berlin``."""
        if self.interval is not None:
            return f"every {int(self.interval.total_seconds())} s"
        assert self.cron is not None
        return f"cron {self.cron.text!r} in {self.zone.key}"


def parse_schedule(
    cron: str | None, interval_seconds: int | None, timezone: str = "UTC"
) -> Schedule:
    """A job's schedule from its stored or given parts, or ScheduleError saying what is wrong."""
    zone = parse_zone(timezone)
    if (cron is None) == (interval_seconds is None):
        raise ScheduleError("give exactly one of cron and interval")
    if cron is not None:
        return Schedule(parse_cron(cron), None, zone)
    return Schedule(None, timedelta(seconds=check_interval(interval_seconds)), zone)
