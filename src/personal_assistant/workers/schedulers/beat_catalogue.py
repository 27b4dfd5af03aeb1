"""Every beat entry of an app, checked: those declared in code and those added at run time.

Declared entries come from the app's configuration: Celery's ``beat_schedule`` (so an entry
added there the usual way is scheduled too) and ``pa_beat_entries`` (the domain schedulers'
entries with their patterns; base_scheduler.build_beat_entries), the latter winning for a name
in both. Added entries come from Redis (entry_store.py). Each is checked alone: a bad cron, an
unknown task or queue, a window that never opens, an invalid workflow definition is reported
as a problem naming the entry, and the other entries run. ``check_entry`` is the same check
for ``celery ... schedule add``, which refuses the entry instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from personal_assistant.workers import constants as c
from personal_assistant.workers.schedulers.base_scheduler import options_data, schedule_data
from personal_assistant.workers.schedulers.beat_entry import (
    BeatEntry,
    EntryError,
    check_against,
    entry_from_data,
)
from personal_assistant.workers.schedulers.beat_timing import (
    check_jitter_fits,
    check_window_opens,
)
from personal_assistant.workers.schedulers.entry_store import EntryStore
from personal_assistant.workers.worker_app import WorkerApp
from personal_assistant.workers.workflows.definition import WorkflowValidationError, parse_and_build


@dataclass
class Catalogue:
    """The entries of one app: runnable ``entries``, which are ``disabled``, which were
    ``added`` at run time, and the ``problems`` (name -> message) of those that cannot run."""

    entries: dict[str, BeatEntry] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)
    added: set[str] = field(default_factory=set)
    problems: dict[str, str] = field(default_factory=dict)
    _enabled: dict[str, BeatEntry] | None = field(default=None, repr=False, compare=False)

    def enabled(self) -> dict[str, BeatEntry]:
        """The entries that run: checked and not disabled (computed once: beat asks every
        tick, and a catalogue is never changed after it is loaded)."""
        if self._enabled is None:
            self._enabled = {n: e for n, e in self.entries.items() if n not in self.disabled}
        return self._enabled


def _celery_entry_data(entry: Mapping[str, Any], timezone: str) -> dict[str, Any]:
    data: dict[str, Any] = schedule_data(entry.get("schedule"))
    data["timezone"] = timezone
    data["task"] = entry.get("task")
    if entry.get("args"):
        data["args"] = list(entry["args"])
    if entry.get("kwargs"):
        data["kwargs"] = dict(entry["kwargs"])
    data.update(options_data(entry.get("options") or {}))
    return data


def declared_data(app: WorkerApp) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The declared entries' data by name, and the problems of Celery entries that cannot be
    read (an unsupported schedule class or option)."""
    timezone = str(app.conf.timezone or "UTC")
    data: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    for name, entry in dict(app.conf.beat_schedule or {}).items():
        try:
            data[name] = _celery_entry_data(entry, timezone)
        except ValueError as exc:
            problems[name] = str(EntryError(name, str(exc)))
    for name, entry in dict(app.conf.get("pa_beat_entries") or {}).items():
        data[name] = dict(entry)
        problems.pop(name, None)
    return data, problems


def known_queues() -> set[str]:
    """The queues a beat entry may name: the five domain queues (each has a worker type)."""
    return set(c.QUEUES)


def check_entry(
    app: WorkerApp, entry: BeatEntry, now: float, known_tasks: set[str], *, new: bool = True
) -> None:
    """Raise :class:`EntryError` if ``entry`` cannot run in ``app``: unknown task or queue, a
    window that never opens for its times, or an invalid workflow definition. ``new``: the
    entry is being added now (an interval's phase starts now; see check_window_opens)."""
    check_against(entry, known_tasks=known_tasks, known_queues=known_queues())
    check_window_opens(entry, now, new=new)
    check_jitter_fits(entry, now)
    if entry.workflow is not None:
        try:
            parse_and_build(entry.workflow, known_tasks=known_tasks, policy=app.workflow_policy)
        except WorkflowValidationError as exc:
            problems = "; ".join(exc.problems)
            raise EntryError(entry.name, f"invalid workflow: {problems}") from None


def known_task_names(app: WorkerApp) -> set[str]:
    """The tasks ``app`` has registered, its task modules imported first."""
    app.loader.import_default_modules()
    return set(app.tasks.keys())


def load_catalogue(app: WorkerApp, store: EntryStore | None, now: float) -> Catalogue:
    """Every entry of ``app`` (and of ``store``, when given), checked one by one."""
    catalogue = Catalogue()
    tasks = known_task_names(app)
    declared, catalogue.problems = declared_data(app)
    candidates: dict[str, BeatEntry | str] = {}
    for name, data in declared.items():
        try:
            candidates[name] = entry_from_data(name, data)
        except EntryError as exc:
            candidates[name] = str(exc)
    if store is not None:
        added, broken = store.added()
        for name, problem in broken.items():
            if name in declared:  # the declared entry runs; the stored one is reported
                catalogue.problems[name] = str(
                    EntryError(name, "an added entry has the name of a declared one; ignored")
                )
                continue
            candidates[name] = problem
            catalogue.added.add(name)
        for name, entry in added.items():
            if name in declared:
                catalogue.problems[name] = str(
                    EntryError(name, "an added entry has the name of a declared one; ignored")
                )
                continue
            candidates[name] = entry
            catalogue.added.add(name)
        catalogue.disabled = store.disabled()
    for name, candidate in candidates.items():
        if isinstance(candidate, str):
            catalogue.problems[name] = candidate
            continue
        try:
            check_entry(app, candidate, now, tasks, new=False)
        except EntryError as exc:
            catalogue.problems[name] = str(exc)
            continue
        catalogue.entries[name] = candidate
    return catalogue
