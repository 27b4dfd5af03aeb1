"""Workflow definitions: a dict (or a YAML/JSON file) of tasks, validated whole before any runs.

```yaml
name: nightly-digest
deadline: 3600                 # seconds for the whole workflow (optional)
tasks:
  fetch:
    task: personal_assistant.workers.tasks.sync_tasks.probe
  summarize:
    task: personal_assistant.workers.tasks.ai_tasks.probe
    depends_on: [fetch]
    condition: "fetch.result['queue'] == 'sync_tasks'"
    trigger_rule: all_success  # Airflow's rules
    timeout: 600               # seconds it may wait for its dependencies
    options: {queue: ai_tasks, priority: 9}
```

``tasks`` may also be a list of mappings with an ``id`` each. Every problem found (unknown task
names, tasks a workflow may not run, unknown dependencies, duplicate ids, cycles, bad
conditions, bad options, values JSON cannot hold, sizes past their limits) is reported together
in one :class:`WorkflowValidationError`, and nothing is dispatched.

Nothing here trusts its input: files go through the bounded loader (bounded_yaml.py), a
dict through the same checks as plain JSON (inputs.py), the tasks through the allow-list
(policy.py); every value a message shows is clipped, and so is the list of problems.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from personal_assistant.workers import constants as c
from personal_assistant.workers.bounded_yaml import (
    InputFileError,
    Limits,
    clip_problems,
    load_yaml_file,
    short_repr,
)
from personal_assistant.workers.workflows.conditions import ConditionError
from personal_assistant.workers.workflows.dag import CycleError, DependencyGraph
from personal_assistant.workers.workflows.inputs import (
    DefinitionTooLarge,
    describe,
    plain_copy,
)
from personal_assistant.workers.workflows.policy import (
    DEFAULT_POLICY,
    WorkflowTaskPolicy,
)
from personal_assistant.workers.workflows.state_machine import (
    DependencyScheduler,
    TaskDependency,
)
from personal_assistant.workers.workflows.task_checks import (
    DURATION,
    MAX_WAIT_S,
    OPTION_FIELDS,
    TASK_FIELDS,
    TASK_ID,
    check_task,
    depends_on_of,
    is_duration,
    show_id,
)

__all__ = [
    "MAX_WAIT_S",
    "MAX_WORKFLOW_TASKS",
    "OPTION_FIELDS",
    "TASK_FIELDS",
    "TASK_ID",
    "WorkflowDefinition",
    "WorkflowTask",
    "WorkflowValidationError",
    "load_definition_file",
    "parse_and_build",
    "parse_definition",
]

# A workflow is one Redis hash read on every task end: keep it to a size that stays cheap.
MAX_WORKFLOW_TASKS = 10_000
TOP_FIELDS = frozenset({"name", "deadline", "tasks"})
# The values a file may hold: 20 a task on the largest workflow (ids, fields, small arguments).
MAX_FILE_VALUES: Final = 20 * MAX_WORKFLOW_TASKS
# One problem's line in a message: long enough for a file path and a reason.
MAX_PROBLEM_CHARS: Final = 300
FILE_LIMITS: Final = Limits(max_bytes=c.WORKFLOW_MAX_DEFINITION_BYTES, max_nodes=MAX_FILE_VALUES)


class WorkflowValidationError(ValueError):
    """The definition cannot run; ``problems`` lists every reason, one line each (each line and
    the list clipped, the last line counting the rest)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [
            short_repr(p, MAX_PROBLEM_CHARS, quote=False) for p in clip_problems(problems)
        ]
        if len(self.problems) == 1:  # one line: what a CLI prints as one error
            super().__init__(f"invalid workflow: {self.problems[0]}")
        else:
            super().__init__("invalid workflow:\n  - " + "\n  - ".join(self.problems))


@dataclass(frozen=True)
class WorkflowTask:
    """One task of a workflow: which Celery task, with what, after what."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    condition: str | None = None
    trigger_rule: str = "all_success"
    timeout: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowDefinition:
    """A validated workflow."""

    name: str
    tasks: dict[str, WorkflowTask]
    deadline: float | None = None

    def to_json(self) -> str:
        """Serialise for storage in Redis: compact, each task's fields left at their defaults
        omitted, so what is stored is about the size of what was validated."""
        return json.dumps(
            {
                "name": self.name,
                "deadline": self.deadline,
                "tasks": [_without_defaults(t) for t in self.tasks.values()],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkflowDefinition:
        """Rebuild a definition stored by :meth:`to_json` (already validated; the runtime checks
        its tasks against the allow-list again before it publishes them)."""
        data = json.loads(raw)
        tasks = {t["id"]: WorkflowTask(**t) for t in data["tasks"]}
        return cls(name=data["name"], tasks=tasks, deadline=data.get("deadline"))

    def build_scheduler(self) -> DependencyScheduler:
        """A fresh state machine for this workflow."""
        deadline = timedelta(seconds=self.deadline) if self.deadline else None
        scheduler = DependencyScheduler(deadline=deadline)
        scheduler.add_dependencies(_as_dependency(task) for task in self.tasks.values())
        return scheduler


_TASK_DEFAULTS: Final = {
    f.name: f.default_factory() if callable(f.default_factory) else f.default
    for f in fields(WorkflowTask)
    if f.name not in ("id", "task")
}


_MISSING: Final = object()


def _without_defaults(task: WorkflowTask) -> dict[str, Any]:
    return {k: v for k, v in asdict(task).items() if _TASK_DEFAULTS.get(k, _MISSING) != v}


def _as_dependency(task: WorkflowTask) -> TaskDependency:
    return TaskDependency(
        task_id=task.id,
        depends_on=list(task.depends_on),
        condition=task.condition,
        timeout=timedelta(seconds=task.timeout) if task.timeout else None,
        trigger_rule=task.trigger_rule,
    )


def load_definition_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON definition through the bounded loader (a regular file of at most
    ``WORKFLOW_MAX_DEFINITION_BYTES``, no aliases, plain finite data); any problem is a
    WorkflowValidationError naming the file and the line."""
    try:
        data = load_yaml_file(path, FILE_LIMITS)
    except InputFileError as exc:
        raise WorkflowValidationError([str(exc)]) from None
    if not isinstance(data, dict):
        raise WorkflowValidationError([f"{path}: the top level must be a mapping"])
    return data


def _task_entries(raw_tasks: Any, problems: list[str]) -> list[tuple[str, Any]]:
    if isinstance(raw_tasks, Mapping):
        return [(str(k), v) for k, v in raw_tasks.items()]
    if isinstance(raw_tasks, list):
        entries = []
        for i, item in enumerate(raw_tasks):
            if not isinstance(item, Mapping) or item.get("id") in (None, ""):
                problems.append(f"tasks[{i}]: each task needs an 'id'")
                continue
            entries.append((str(item["id"]), item))
        return entries
    problems.append("'tasks' must be a mapping of id -> task, or a list of tasks with ids")
    return []


def _check_graph(entries: list[tuple[str, Any]], ids: Collection[str], problems: list[str]) -> None:
    """Unknown dependencies and cycles, over every task (also those with other problems), so
    one run of the validator reports everything."""
    upstreams_of: dict[str, list[str]] = {}
    for tid, spec in entries:
        deps = depends_on_of(spec) if isinstance(spec, Mapping) else None
        if deps is None:
            continue
        problems.extend(
            f"{show_id(tid)}: depends on unknown task {short_repr(d)}" for d in deps if d not in ids
        )
        if tid in deps:
            shown = show_id(tid)
            problems.append(
                f"dependency cycle: {shown} -> {shown} (a task cannot depend on itself)"
            )
        upstreams_of[tid] = [d for d in deps if d in ids and d != tid]
    try:
        DependencyGraph().set_many_upstreams(upstreams_of)
    except CycleError as exc:
        problems.append(short_repr(str(exc), MAX_PROBLEM_CHARS, quote=False))


def _check_top(raw: Mapping[str, Any], problems: list[str]) -> tuple[Any, Any]:
    """The top-level fields but the tasks; returns the name and the deadline."""
    for unknown in sorted(set(raw) - TOP_FIELDS, key=str):
        problems.append(f"unknown top-level field {describe(unknown)}")
    name = raw.get("name", "workflow")
    if not isinstance(name, str) or not name or len(name) > 200:
        problems.append("'name' must be a string of 1-200 characters")
    deadline = raw.get("deadline")
    if deadline is not None and not is_duration(deadline):
        problems.append(f"'deadline' must be {DURATION}")
    return name, deadline


def parse_definition(
    raw: Mapping[str, Any],
    *,
    known_tasks: Collection[str] | None = None,
    policy: WorkflowTaskPolicy = DEFAULT_POLICY,
) -> WorkflowDefinition:
    """Validate ``raw`` whole; raise WorkflowValidationError listing every problem.

    ``known_tasks``: the registered task names (None: not checked); ``policy``: the tasks a
    workflow may run (by default the domain tasks only).
    """
    return parse_and_build(raw, known_tasks=known_tasks, policy=policy)[0]


def parse_and_build(
    raw: Mapping[str, Any],
    *,
    known_tasks: Collection[str] | None = None,
    policy: WorkflowTaskPolicy = DEFAULT_POLICY,
) -> tuple[WorkflowDefinition, DependencyScheduler]:
    """:func:`parse_definition`, also returning the state machine built to check it (so a
    submit does not build it again)."""
    if not isinstance(raw, Mapping):
        raise WorkflowValidationError(["a workflow definition must be a mapping"])
    try:
        # Checked as the JSON it will be stored as, before anything else looks at it.
        raw, problems = plain_copy(raw, c.WORKFLOW_MAX_DEFINITION_BYTES)
    except DefinitionTooLarge as exc:
        raise WorkflowValidationError([str(exc)]) from None
    name, deadline = _check_top(raw, problems)
    entries = _task_entries(raw.get("tasks"), problems)
    if not entries and "tasks" in raw:
        problems.append("a workflow needs at least one task")
    if len(entries) > MAX_WORKFLOW_TASKS:
        raise WorkflowValidationError([f"{len(entries)} tasks; at most {MAX_WORKFLOW_TASKS}"])
    counts: dict[str, int] = {}
    for tid, _ in entries:
        counts[tid] = counts.get(tid, 0) + 1
    problems += [f"duplicate task id {short_repr(tid)}" for tid, n in counts.items() if n > 1]
    tasks: dict[str, WorkflowTask] = {}
    for tid, spec in entries:
        checked = check_task(tid, spec, known_tasks, policy, problems)
        if checked is not None and tid not in tasks:
            tasks[tid] = WorkflowTask(**checked)
    _check_graph(entries, counts, problems)
    if not problems:
        definition = WorkflowDefinition(
            name=str(name), tasks=tasks, deadline=None if deadline is None else float(deadline)
        )
        try:
            scheduler = definition.build_scheduler()
        except (CycleError, ConditionError, ValueError) as exc:
            problems.append(str(exc))
        else:
            return definition, scheduler
    raise WorkflowValidationError(problems)
