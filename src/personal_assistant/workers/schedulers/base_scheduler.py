"""Base of the domain schedulers: a typed periodic entry and the merge into ``beat_schedule``.

Each domain's scheduler module lists its :class:`PeriodicTask` entries; ``build_beat_schedule``
merges them into Celery's ``beat_schedule`` (what any Celery beat reads), refusing two entries
of the same name (which would silently replace one another) and tasks outside the task package
(a typo there only shows as "unregistered task" at 3 a.m.). ``build_beat_entries`` gives the
same entries with their patterns (jitter, window, no overlap, backlog limit, misfire policy,
periodic workflows) in the format the enhanced scheduler reads (beat_entry.py), which Celery's
own ``beat_schedule`` cannot carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from celery.schedules import crontab, schedule

from personal_assistant.workers.constants import TASKS_PACKAGE

# Options of a Celery entry the enhanced scheduler's format holds as fields of their own.
_OPTION_FIELDS = ("queue", "priority", "expires")


@dataclass(frozen=True)
class PeriodicTask:
    """One beat entry: which task (or ``workflow``), when, with what arguments, options and
    patterns. Patterns are off by default; beat_entry.py says what each does."""

    name: str
    task: str
    schedule: crontab | schedule | float | timedelta
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()
    timezone: str | None = None  # a cron entry's zone; None: the app's (UTC)
    jitter: float = 0.0
    window: str | None = None
    no_overlap: bool = False
    max_queue_depth: int | None = None
    misfire: str = "run_once"
    misfire_grace: float | None = None
    workflow: Mapping[str, Any] | None = None

    def as_beat_entry(self) -> dict[str, Any]:
        """The entry in Celery's ``beat_schedule`` format (a workflow entry has none)."""
        entry: dict[str, Any] = {"task": self.task, "schedule": self.schedule}
        if self.args:
            entry["args"] = list(self.args)
        if self.kwargs:
            entry["kwargs"] = dict(self.kwargs)
        if self.options:
            entry["options"] = dict(self.options)
        return entry

    def as_entry_data(self, app_timezone: str = "UTC") -> dict[str, Any]:
        """The entry in the enhanced scheduler's format (beat_entry.entry_from_data)."""
        data: dict[str, Any] = schedule_data(self.schedule)
        data["timezone"] = self.timezone or app_timezone
        if self.workflow is not None:
            data["workflow"] = dict(self.workflow)
        else:
            data["task"] = self.task
        data.update(options_data(self.options))
        extras: dict[str, Any] = {
            "args": list(self.args) or None,
            "kwargs": dict(self.kwargs) or None,
            "jitter": self.jitter or None,
            "window": self.window,
            "no_overlap": self.no_overlap or None,
            "max_queue_depth": self.max_queue_depth,
            "misfire_grace": self.misfire_grace,
        }
        data.update({key: value for key, value in extras.items() if value is not None})
        data["misfire"] = self.misfire
        return data


def schedule_data(value: object) -> dict[str, Any]:
    """``{"cron": ...}`` or ``{"interval": ...}`` for a Celery schedule object or a number of
    seconds; ValueError for what the enhanced scheduler cannot run (solar, custom classes)."""
    if isinstance(value, crontab):
        fields = (
            value._orig_minute,
            value._orig_hour,
            value._orig_day_of_month,
            value._orig_month_of_year,
            value._orig_day_of_week,
        )
        return {"cron": " ".join(_cron_field(part) for part in fields)}
    if type(value) is schedule:  # not a subclass: solar and others mean something else
        run_every: timedelta = cast(Any, value).run_every  # celery.schedules is untyped
        return {"interval": float(run_every.total_seconds())}
    if isinstance(value, timedelta):
        return {"interval": value.total_seconds()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"interval": float(value)}
    raise ValueError(
        f"a {type(value).__name__} schedule is not supported (use crontab, an interval, or cron)"
    )


def _cron_field(part: object) -> str:
    """A crontab field as cron text: ``crontab(minute=[0, 30])`` keeps the list it was given."""
    if isinstance(part, list | tuple | set | frozenset):
        return ",".join(str(value) for value in sorted(part))
    return str(part)


def options_data(options: Mapping[str, Any]) -> dict[str, Any]:
    """The queue, priority and expiry of a Celery entry's options; ValueError for others (the
    enhanced scheduler sends only those, so anything else would be silently dropped)."""
    unknown = sorted(set(options) - set(_OPTION_FIELDS))
    if unknown:
        raise ValueError(f"options {', '.join(unknown)} are not supported (only {_OPTION_FIELDS})")
    return {key: options[key] for key in _OPTION_FIELDS if options.get(key) is not None}


def _checked(groups: Iterable[Iterable[PeriodicTask]]) -> list[PeriodicTask]:
    merged: dict[str, PeriodicTask] = {}
    for group in groups:
        for entry in group:
            if entry.name in merged:
                raise ValueError(f"two beat entries are named {entry.name!r}")
            if entry.workflow is None and not entry.task.startswith(TASKS_PACKAGE + "."):
                raise ValueError(
                    f"beat entry {entry.name!r} names {entry.task!r}, "
                    f"which is outside {TASKS_PACKAGE}"
                )
            merged[entry.name] = entry
    return list(merged.values())


def build_beat_schedule(*groups: Iterable[PeriodicTask]) -> dict[str, dict[str, Any]]:
    """Merge the domain schedulers' task entries into one Celery ``beat_schedule`` dict."""
    return {
        entry.name: entry.as_beat_entry() for entry in _checked(groups) if entry.workflow is None
    }


def build_beat_entries(
    *groups: Iterable[PeriodicTask], timezone: str = "UTC"
) -> dict[str, dict[str, Any]]:
    """Merge the domain schedulers' entries, patterns and workflows included, in the enhanced
    scheduler's format (``app.conf.pa_beat_entries``)."""
    return {entry.name: entry.as_entry_data(timezone) for entry in _checked(groups)}
