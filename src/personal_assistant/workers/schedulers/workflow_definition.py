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
names, unknown dependencies, duplicate ids, cycles, bad conditions, bad options) is reported
together in one :class:`WorkflowValidationError`, and nothing is dispatched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from personal_assistant.workers import constants as c
from personal_assistant.workers.schedulers.conditions import ConditionError, parse_condition
from personal_assistant.workers.schedulers.dag import CycleError, DependencyGraph
from personal_assistant.workers.schedulers.dependency_scheduler import (
    DependencyScheduler,
    TaskDependency,
)
from personal_assistant.workers.schedulers.trigger_rules import parse_trigger_rule

# A workflow is one Redis hash read on every task end: keep it to a size that stays cheap.
MAX_WORKFLOW_TASKS = 10_000
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")  # used with fullmatch
TASK_FIELDS = frozenset(
    {
        "id",
        "task",
        "args",
        "kwargs",
        "depends_on",
        "condition",
        "trigger_rule",
        "timeout",
        "options",
    }
)
OPTION_FIELDS = frozenset({"queue", "priority"})
TOP_FIELDS = frozenset({"name", "deadline", "tasks"})


class WorkflowValidationError(ValueError):
    """The definition cannot run; ``problems`` lists every reason, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid workflow:\n  - " + "\n  - ".join(problems))


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
        """Serialise for storage in Redis."""
        return json.dumps(
            {
                "name": self.name,
                "deadline": self.deadline,
                "tasks": [asdict(t) for t in self.tasks.values()],
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkflowDefinition:
        """Rebuild a definition stored by :meth:`to_json` (already validated)."""
        data = json.loads(raw)
        tasks = {t["id"]: WorkflowTask(**t) for t in data["tasks"]}
        return cls(name=data["name"], tasks=tasks, deadline=data["deadline"])

    def build_scheduler(self) -> DependencyScheduler:
        """A fresh state machine for this workflow."""
        deadline = timedelta(seconds=self.deadline) if self.deadline else None
        scheduler = DependencyScheduler(deadline=deadline)
        scheduler.add_dependencies(_as_dependency(task) for task in self.tasks.values())
        return scheduler


def _as_dependency(task: WorkflowTask) -> TaskDependency:
    return TaskDependency(
        task_id=task.id,
        depends_on=list(task.depends_on),
        condition=task.condition,
        timeout=timedelta(seconds=task.timeout) if task.timeout else None,
        trigger_rule=task.trigger_rule,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {line})", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_definition_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON definition; WorkflowValidationError with the line on a syntax error."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowValidationError([f"cannot read {file}: {exc.strerror}"]) from None
    try:
        if file.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise WorkflowValidationError([f"{file}: line {exc.lineno}: {exc.msg}"]) from None
    except yaml.YAMLError as exc:
        raise WorkflowValidationError([f"{file}: {exc}"]) from None
    if not isinstance(data, dict):
        raise WorkflowValidationError([f"{file}: the top level must be a mapping"])
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


def _is_positive_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value > 0


def _check_call(
    tid: str, spec: Mapping[str, Any], known_tasks: Collection[str] | None, problems: list[str]
) -> None:
    """The Celery task and its arguments."""
    name = spec.get("task")
    if not isinstance(name, str) or not name:
        problems.append(f"{tid}: 'task' (a Celery task name) is required")
    elif known_tasks is not None and name not in known_tasks:
        problems.append(f"{tid}: unknown Celery task {name!r}")
    if not isinstance(spec.get("args", []), list):
        problems.append(f"{tid}: 'args' must be a list")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        problems.append(f"{tid}: 'kwargs' must be a mapping with string keys")


def _check_rules(
    tid: str, spec: Mapping[str, Any], depends_on: list[str], problems: list[str]
) -> None:
    """Trigger rule, condition and timeout."""
    try:
        parse_trigger_rule(str(spec.get("trigger_rule", "all_success")))
    except ValueError as exc:
        problems.append(f"{tid}: {exc}")
    condition = spec.get("condition")
    if condition is not None:
        try:
            parse_condition(str(condition), allowed_names=depends_on)
        except ConditionError as exc:
            problems.append(f"{tid}: bad condition: {exc}")
    timeout = spec.get("timeout")
    if timeout is not None and not _is_positive_number(timeout):
        problems.append(f"{tid}: 'timeout' must be a positive number of seconds")


def _check_options(tid: str, options: Any, problems: list[str]) -> None:
    """Queue and priority."""
    if not isinstance(options, Mapping):
        problems.append(f"{tid}: 'options' must be a mapping")
        return
    for unknown in sorted(set(options) - OPTION_FIELDS, key=str):
        problems.append(f"{tid}: unknown option {unknown!r} (allowed: queue, priority)")
    if "queue" in options and options["queue"] not in c.QUEUES:
        problems.append(f"{tid}: unknown queue {options['queue']!r}; known: {list(c.QUEUES)}")
    priority = options.get("priority")
    if priority is not None and (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not c.PRIORITY_MIN <= priority <= c.PRIORITY_MAX
    ):
        problems.append(
            f"{tid}: priority must be an integer from {c.PRIORITY_MIN} to {c.PRIORITY_MAX}"
        )


def _depends_on(spec: Mapping[str, Any]) -> list[str] | None:
    """The upstream ids (a single string allowed), or None when malformed."""
    deps = spec.get("depends_on", [])
    deps = [deps] if isinstance(deps, str) else deps
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        return None
    return deps


def _check_task(
    tid: str,
    spec: Any,
    known_tasks: Collection[str] | None,
    problems: list[str],
) -> WorkflowTask | None:
    """One task's own fields (its dependencies are checked across tasks, by the caller)."""
    if not isinstance(spec, Mapping):
        problems.append(f"{tid}: must be a mapping")
        return None
    before = len(problems)
    if not TASK_ID.fullmatch(tid):
        problems.append(f"{tid!r}: task ids are 1-100 letters, digits, '_' or '-'")
    for unknown in sorted(set(spec) - TASK_FIELDS, key=str):
        problems.append(f"{tid}: unknown field {unknown!r}")
    _check_call(tid, spec, known_tasks, problems)
    depends_on = _depends_on(spec)
    if depends_on is None:
        problems.append(f"{tid}: 'depends_on' must be a list of task ids")
    _check_rules(tid, spec, depends_on or [], problems)
    _check_options(tid, spec.get("options", {}), problems)
    if len(problems) > before:
        return None
    condition, timeout = spec.get("condition"), spec.get("timeout")
    return WorkflowTask(
        id=tid,
        task=str(spec["task"]),
        args=list(spec.get("args", [])),
        kwargs=dict(spec.get("kwargs", {})),
        depends_on=list(depends_on or []),
        condition=None if condition is None else str(condition),
        trigger_rule=str(spec.get("trigger_rule", "all_success")),
        timeout=None if timeout is None else float(timeout),
        options=dict(spec.get("options", {})),
    )


def _check_graph(entries: list[tuple[str, Any]], ids: Collection[str], problems: list[str]) -> None:
    """Unknown dependencies and cycles, over every task (also those with other problems), so
    one run of the validator reports everything."""
    upstreams_of: dict[str, list[str]] = {}
    for tid, spec in entries:
        deps = _depends_on(spec) if isinstance(spec, Mapping) else None
        if deps is None:
            continue
        problems.extend(f"{tid}: depends on unknown task {d!r}" for d in deps if d not in ids)
        if tid in deps:
            problems.append(f"dependency cycle: {tid} -> {tid} (a task cannot depend on itself)")
        upstreams_of[tid] = [d for d in deps if d in ids and d != tid]
    try:
        DependencyGraph().set_many_upstreams(upstreams_of)
    except CycleError as exc:
        problems.append(str(exc))


def parse_definition(
    raw: Mapping[str, Any],
    *,
    known_tasks: Collection[str] | None = None,
) -> WorkflowDefinition:
    """Validate ``raw`` whole; raise WorkflowValidationError listing every problem."""
    return parse_and_build(raw, known_tasks=known_tasks)[0]


def parse_and_build(
    raw: Mapping[str, Any],
    *,
    known_tasks: Collection[str] | None = None,
) -> tuple[WorkflowDefinition, DependencyScheduler]:
    """:func:`parse_definition`, also returning the state machine built to check it (so a
    submit does not build it again)."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise WorkflowValidationError(["a workflow definition must be a mapping"])
    for unknown in sorted(set(raw) - TOP_FIELDS, key=str):
        problems.append(f"unknown top-level field {unknown!r}")
    name = raw.get("name", "workflow")
    if not isinstance(name, str) or not name or len(name) > 200:
        problems.append("'name' must be a string of 1-200 characters")
    deadline = raw.get("deadline")
    if deadline is not None and not _is_positive_number(deadline):
        problems.append("'deadline' must be a positive number of seconds")
    entries = _task_entries(raw.get("tasks"), problems)
    if not entries and "tasks" in raw:
        problems.append("a workflow needs at least one task")
    if len(entries) > MAX_WORKFLOW_TASKS:
        raise WorkflowValidationError([f"{len(entries)} tasks; at most {MAX_WORKFLOW_TASKS}"])
    counts: dict[str, int] = {}
    for tid, _ in entries:
        counts[tid] = counts.get(tid, 0) + 1
    problems += [f"duplicate task id {tid!r}" for tid, n in counts.items() if n > 1]
    tasks: dict[str, WorkflowTask] = {}
    for tid, spec in entries:
        task = _check_task(tid, spec, known_tasks, problems)
        if task is not None and tid not in tasks:
            tasks[tid] = task
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
