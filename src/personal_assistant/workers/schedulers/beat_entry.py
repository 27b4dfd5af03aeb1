"""A beat entry and its patterns, checked: what to send, when, and on which conditions.

Pure: no Redis, Celery or app. An entry comes from code (a domain scheduler's
:class:`~personal_assistant.workers.schedulers.base_scheduler.PeriodicTask`, through
``beat_schedule``) or from an operator (``celery ... schedule add``, stored in Redis as the JSON
of :meth:`BeatEntry.to_data`). Both paths build it with :func:`entry_from_data`, so a mistake is
reported the same way, as one :class:`EntryError` naming the entry and what is wrong with it.

The patterns (each optional, each off by default):

- **cron** (five fields, in the entry's IANA ``timezone``; see ai/schedule.py for the syntax and
  the daylight-saving rules) or **interval** (elapsed seconds, phase kept);
- **jitter**: each run is sent up to this many seconds after its time, by an offset derived from
  the entry and the time, so every beat (and a restarted one) agrees on it;
- **window**: runs only inside an active window (``mon-fri 09:00-17:00 Europe/Berlin``); a time
  outside it is skipped;
- **no_overlap**: a time is skipped while the entry's previous run is still queued or running;
- **max_queue_depth**: a time is skipped while the target queue holds more messages than this;
- **workflow**: the entry submits this workflow definition instead of sending one task;
- **misfire**: what a run late by more than ``misfire_grace`` seconds does: ``run_once`` (the
  default: every missed time collapses into one run, sent now) or ``skip``.

Checks that need the app (the task is registered, the queue exists, the workflow is valid) take
what they need as arguments in :func:`check_against`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from personal_assistant.workers.ai.schedule import (
    CronExpression,
    ScheduleError,
    parse_cron,
    parse_zone,
)
from personal_assistant.workers.schedulers.beat_window import ActiveWindow, parse_window

MisfirePolicy = Literal["run_once", "skip"]
MISFIRE_POLICIES: Final[tuple[str, ...]] = ("run_once", "skip")

# Beat wakes up at most about once a second for its soonest entry: a shorter interval would be
# sent late every time, and nobody schedules sub-second work through beat.
MIN_INTERVAL_S: Final = 1.0
# A day of jitter is already "some time today"; more is a different schedule, not jitter.
MAX_JITTER_S: Final = 86_400.0
# A run late by this much is a misfire (the beat was down, or the lock changed hands); below
# it, a late run is only late. A minute covers a lock handover with the default timeout.
DEFAULT_MISFIRE_GRACE_S: Final = 60.0
# Names are Redis key suffixes, metric labels and CLI arguments: keep them plain and short.
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
# The JSON of one entry (the workflow definition included) stored in Redis; ten times a real one.
MAX_ENTRY_BYTES: Final = 64 * 1024

_FIELDS: Final = frozenset(
    {
        "task",
        "cron",
        "interval",
        "timezone",
        "args",
        "kwargs",
        "queue",
        "priority",
        "expires",
        "jitter",
        "window",
        "no_overlap",
        "max_queue_depth",
        "workflow",
        "misfire",
        "misfire_grace",
        "enabled",
    }
)


class EntryError(ValueError):
    """A beat entry that cannot be scheduled; the message names the entry and the mistake."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"beat entry {name!r}: {problem}")
        self.entry = name
        self.problem = problem


@dataclass(frozen=True)
class BeatEntry:
    """One checked beat entry (build it with :func:`entry_from_data`); ``task`` is empty for
    a periodic workflow."""

    name: str
    task: str
    cron: CronExpression | None = None
    interval: float | None = None
    timezone: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    expires: float | None = None
    jitter: float = 0.0
    window: ActiveWindow | None = None
    no_overlap: bool = False
    max_queue_depth: int | None = None
    workflow: Mapping[str, Any] | None = None
    misfire: MisfirePolicy = "run_once"
    misfire_grace: float = DEFAULT_MISFIRE_GRACE_S
    enabled: bool = True

    def to_data(self) -> dict[str, Any]:
        """The entry as JSON-ready data that :func:`entry_from_data` reads back unchanged."""
        data: dict[str, Any] = {"timezone": self.timezone}
        if self.workflow is None:
            data["task"] = self.task
        if self.cron is not None:
            data["cron"] = self.cron.text
        if self.interval is not None:
            data["interval"] = self.interval
        optional: dict[str, Any] = {
            "args": list(self.args) or None,
            "kwargs": dict(self.kwargs) or None,
            "queue": self.queue,
            "priority": self.priority,
            "expires": self.expires,
            "jitter": self.jitter or None,
            "window": self.window.text if self.window is not None else None,
            "no_overlap": self.no_overlap or None,
            "max_queue_depth": self.max_queue_depth,
            "workflow": dict(self.workflow) if self.workflow is not None else None,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        data["misfire"] = self.misfire
        data["misfire_grace"] = self.misfire_grace
        data["enabled"] = self.enabled
        return data

    def fingerprint(self) -> str:
        """A digest of what decides the entry's times; a change re-plans its next run."""
        timing = {
            "cron": self.cron.text if self.cron is not None else None,
            "interval": self.interval,
            "timezone": self.timezone,
            "jitter": self.jitter,
        }
        text = json.dumps(timing, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe_schedule(self) -> str:
        """One line for tables and logs: ``cron '0 2 * * *' UTC`` or ``every 60 s``."""
        if self.cron is not None:
            return f"cron {self.cron.text!r} in {self.timezone}"
        return f"every {self.interval:g} s"


def _number(name: str, key: str, value: object, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EntryError(name, f"{key} must be a number of seconds, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and minimum <= number <= maximum):
        raise EntryError(name, f"{key} must be between {minimum:g} and {maximum:g}, got {value!r}")
    return number


def _checked_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise EntryError(
            str(name),
            "a name is 1 to 128 letters, digits and . _ : @ - (starting with a letter or digit)",
        )
    return name


def _checked_json(name: str, key: str, value: object) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EntryError(name, f"{key} must be JSON data ({exc})") from None


def _timing(name: str, data: Mapping[str, Any]) -> tuple[CronExpression | None, float | None, str]:
    cron_text, interval = data.get("cron"), data.get("interval")
    if (cron_text is None) == (interval is None):
        raise EntryError(name, "give exactly one of cron and interval")
    timezone = data.get("timezone", "UTC")
    try:
        zone = parse_zone(timezone)
        cron = parse_cron(cron_text) if cron_text is not None else None
    except ScheduleError as exc:
        raise EntryError(name, str(exc)) from None
    seconds = None
    if interval is not None:
        seconds = _number(name, "interval", interval, minimum=MIN_INTERVAL_S, maximum=366 * 86_400)
    return cron, seconds, zone.key


def _options(name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    queue = data.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise EntryError(name, f"queue must be a queue name, got {queue!r}")
    priority = data.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 10
    ):
        raise EntryError(
            name, f"priority must be a whole number 0..10 (10 = high), got {priority!r}"
        )
    expires = data.get("expires")
    if expires is not None:
        expires = _number(name, "expires", expires, minimum=1.0, maximum=366 * 86_400)
    depth = data.get("max_queue_depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise EntryError(name, f"max_queue_depth must be a whole number >= 0, got {depth!r}")
    misfire = data.get("misfire", "run_once")
    if misfire not in MISFIRE_POLICIES:
        raise EntryError(
            name, f"misfire must be one of {', '.join(MISFIRE_POLICIES)}, got {misfire!r}"
        )
    grace = _number(
        name,
        "misfire_grace",
        data.get("misfire_grace", DEFAULT_MISFIRE_GRACE_S),
        minimum=0.0,
        maximum=366 * 86_400,
    )
    flags = {
        key: data.get(key, default) for key, default in (("no_overlap", False), ("enabled", True))
    }
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise EntryError(name, f"{key} must be true or false, got {value!r}")
    return {
        "queue": queue,
        "priority": priority,
        "expires": expires,
        "max_queue_depth": depth,
        "misfire": misfire,
        "misfire_grace": grace,
        **flags,
    }


def entry_from_data(name: object, data: Mapping[str, Any]) -> BeatEntry:
    """A checked :class:`BeatEntry` from its data (see :meth:`BeatEntry.to_data`), or
    :class:`EntryError` naming the entry and its first mistake."""
    checked_name = _checked_name(name)
    if not isinstance(data, Mapping):
        raise EntryError(checked_name, f"an entry is a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise EntryError(checked_name, f"unknown field(s) {', '.join(unknown)}")
    task = data.get("task")
    if data.get("workflow") is not None:
        if task is not None:
            raise EntryError(checked_name, "give a task or a workflow, not both")
        task = ""
    elif not isinstance(task, str) or not task:
        raise EntryError(checked_name, "task must name a task (or give a workflow)")
    cron, interval, timezone = _timing(checked_name, data)
    args, kwargs = data.get("args", ()), data.get("kwargs", {})
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise EntryError(checked_name, "args must be a list and kwargs a mapping")
    _checked_json(checked_name, "args", list(args))
    _checked_json(checked_name, "kwargs", dict(kwargs))
    jitter = _number(
        checked_name, "jitter", data.get("jitter", 0.0), minimum=0.0, maximum=MAX_JITTER_S
    )
    if interval is not None and jitter >= interval:
        raise EntryError(checked_name, f"jitter ({jitter:g} s) must be shorter than the interval")
    window = None
    if data.get("window") is not None:
        try:
            window = parse_window(data["window"])
        except ValueError as exc:
            raise EntryError(checked_name, str(exc)) from None
    workflow = data.get("workflow")
    if workflow is not None:
        if not isinstance(workflow, Mapping):
            raise EntryError(checked_name, "workflow must be a workflow definition (a mapping)")
        _checked_json(checked_name, "workflow", dict(workflow))
    entry = BeatEntry(
        name=checked_name,
        task=task,
        cron=cron,
        interval=interval,
        timezone=timezone,
        args=tuple(args),
        kwargs=dict(kwargs),
        jitter=jitter,
        window=window,
        workflow=dict(workflow) if workflow is not None else None,
        **_options(checked_name, data),
    )
    if len(json.dumps(entry.to_data())) > MAX_ENTRY_BYTES:
        raise EntryError(checked_name, f"the entry is larger than {MAX_ENTRY_BYTES} bytes as JSON")
    return entry


def check_against(
    entry: BeatEntry,
    *,
    known_tasks: Collection[str],
    known_queues: Collection[str],
) -> None:
    """Raise :class:`EntryError` if ``entry`` names a task the app does not know or a queue no
    worker type serves. (A periodic workflow's definition is checked by the workflow parser.)"""
    if entry.workflow is None and entry.task not in known_tasks:
        close = _closest(entry.task, known_tasks)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise EntryError(entry.name, f"unknown task {entry.task!r}{hint}")
    if entry.queue is not None and entry.queue not in known_queues:
        raise EntryError(
            entry.name, f"unknown queue {entry.queue!r} (known: {', '.join(sorted(known_queues))})"
        )


def _closest(word: str, choices: Collection[str]) -> str | None:
    import difflib  # noqa: PLC0415 - only on the error path

    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.8)
    return matches[0] if matches else None
