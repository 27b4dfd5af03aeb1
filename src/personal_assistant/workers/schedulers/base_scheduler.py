"""Base of the domain schedulers: a typed periodic entry and the merge into ``beat_schedule``.

Each domain's scheduler module lists its :class:`PeriodicTask` entries; ``build_beat_schedule``
merges them, refusing two entries of the same name (which would silently replace one another)
and tasks outside the task package (a typo there only shows as "unregistered task" at 3 a.m.).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery.schedules import crontab, schedule

from personal_assistant.workers.constants import TASKS_PACKAGE


@dataclass(frozen=True)
class PeriodicTask:
    """One beat entry: which task, when, with what arguments and options."""

    name: str
    task: str
    schedule: crontab | schedule | float
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def as_beat_entry(self) -> dict[str, Any]:
        """The entry in Celery's ``beat_schedule`` format."""
        entry: dict[str, Any] = {"task": self.task, "schedule": self.schedule}
        if self.kwargs:
            entry["kwargs"] = dict(self.kwargs)
        if self.options:
            entry["options"] = dict(self.options)
        return entry


def build_beat_schedule(*groups: Iterable[PeriodicTask]) -> dict[str, dict[str, Any]]:
    """Merge the domain schedulers' entries into one ``beat_schedule`` dict."""
    merged: dict[str, dict[str, Any]] = {}
    for group in groups:
        for entry in group:
            if entry.name in merged:
                raise ValueError(f"two beat entries are named {entry.name!r}")
            if not entry.task.startswith(TASKS_PACKAGE + "."):
                raise ValueError(
                    f"beat entry {entry.name!r} names {entry.task!r}, "
                    f"which is outside {TASKS_PACKAGE}"
                )
            merged[entry.name] = entry.as_beat_entry()
    return merged
