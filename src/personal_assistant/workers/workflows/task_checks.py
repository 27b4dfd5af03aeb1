"""One task of a workflow definition, checked field by field (definition.py checks
the whole: top-level fields, ids, the graph).

Every check appends a one-line problem naming the task and the field and carries on, so one run
reports everything; values shown in a problem are clipped (:func:`describe`). The task's name
must be registered (when the caller knows the registry) and allowed (policy.py); its
arguments must fit ``WORKFLOW_MAX_ARGS_BYTES`` as JSON; its durations are finite seconds up to
:data:`MAX_WAIT_S`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any, Final

from personal_assistant.workers import constants as c
from personal_assistant.workers.bounded_yaml import short_repr
from personal_assistant.workers.routing import home_queue
from personal_assistant.workers.workflows.conditions import ConditionError, parse_condition
from personal_assistant.workers.workflows.inputs import describe
from personal_assistant.workers.workflows.policy import WorkflowTaskPolicy
from personal_assistant.workers.workflows.trigger_rules import parse_trigger_rule

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
# Timeouts and deadlines: timedelta holds about 2.7 million years, but a workflow kept open in
# Redis (and swept for timeouts) for more than a year is a mistake, and a cap keeps every
# duration exact as a float.
MAX_WAIT_S: Final = 366 * 86_400
# Suggestions for a misspelt task name: a few, and only for names of a plausible length (a
# task name is a dotted path of a few dozen characters; difflib compares every pair of them).
MAX_SUGGESTIONS: Final = 3
MAX_SUGGESTED_NAME_CHARS: Final = 200
# difflib's similarity a suggestion needs: at 0.6 (its default) `cleanup_old_log` would be
# offered `cleanup_temp_files`, a different task; one or two letters off stay well above 0.75.
SUGGESTION_CUTOFF: Final = 0.75
# No trigger rule's name is longer: a longer value is unknown, and its message stays short.
_MAX_RULE_CHARS: Final = 100


def show_id(tid: str) -> str:
    """A task id as messages show it: as written when valid, else quoted and clipped."""
    return tid if TASK_ID.fullmatch(tid) else short_repr(tid)


def is_duration(value: Any) -> bool:
    """A positive, finite number of seconds up to MAX_WAIT_S (not a bool, not a huge int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 < value <= MAX_WAIT_S and math.isfinite(value)


DURATION: Final = f"a positive number of seconds, at most {MAX_WAIT_S:,}"


def _json_bytes(value: Any) -> int:
    """Bytes of ``value``'s compact JSON (already bounded by the definition's size)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str, skipkeys=True)
    return len(text.encode("utf-8", "replace"))


def _short(task_name: str) -> str:
    return task_name.removeprefix(c.TASKS_PACKAGE + ".")


def did_you_mean(name: str, known_tasks: Collection[str], policy: WorkflowTaskPolicy) -> str:
    """``"; did you mean 'x'?"`` naming the registered task ``policy`` allows that ``name`` most
    likely meant; empty when none is close.

    In order: the tasks ``name`` is the tail of (``ai_tasks.probe``), the closest full name
    (``...ai_task.probe``), the tasks whose last part is closest (``run_ai_tsk``).
    """
    if len(name) > MAX_SUGGESTED_NAME_CHARS:  # difflib's cost grows with the product of lengths
        return ""
    allowed = sorted(t for t in known_tasks if policy.allows(t))
    matches = [t for t in allowed if t.endswith("." + name.lstrip("."))]
    if not matches:
        # Compared without the package path every domain task shares, which would make any
        # two of them look alike.
        by_short = {_short(t): t for t in allowed}
        close = difflib.get_close_matches(_short(name), by_short, n=1, cutoff=SUGGESTION_CUTOFF)
        matches = [by_short[m] for m in close]
    if not matches:
        by_last_part: dict[str, list[str]] = {}
        for task in allowed:
            by_last_part.setdefault(task.rpartition(".")[2], []).append(task)
        last = name.rpartition(".")[2]
        close = difflib.get_close_matches(last, list(by_last_part), n=1, cutoff=SUGGESTION_CUTOFF)
        matches = [task for part in close for task in by_last_part[part]]
    if not matches:
        return ""
    shown = " or ".join(describe(m) for m in matches[:MAX_SUGGESTIONS])
    return f"; did you mean {shown}?"


def _check_call(
    tid: str,
    spec: Mapping[str, Any],
    known_tasks: Collection[str] | None,
    policy: WorkflowTaskPolicy,
    problems: list[str],
) -> None:
    """The Celery task (registered, and allowed in workflows) and its arguments."""
    label, name = show_id(tid), spec.get("task")
    if not isinstance(name, str) or not name:
        problems.append(f"{label}: 'task' (a Celery task name) is required")
    elif known_tasks is not None and name not in known_tasks:
        hint = did_you_mean(name, known_tasks, policy)
        problems.append(f"{label}: unknown Celery task {describe(name)}{hint}")
    elif (refusal := policy.refusal(name)) is not None:
        problems.append(f"{label}: task {describe(name)} may not run in a workflow: {refusal}")
    args, kwargs = spec.get("args", []), spec.get("kwargs", {})
    if not isinstance(args, list):
        problems.append(f"{label}: 'args' must be a list")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        problems.append(f"{label}: 'kwargs' must be a mapping with string keys")
    size = _json_bytes(args) + _json_bytes(kwargs)
    if size > c.WORKFLOW_MAX_ARGS_BYTES:
        problems.append(
            f"{label}: 'args' and 'kwargs' take {size:,} bytes as JSON; the limit is "
            f"{c.WORKFLOW_MAX_ARGS_BYTES:,} bytes (pass references to data, not the data)"
        )


def _check_rules(
    tid: str, spec: Mapping[str, Any], depends_on: list[str], problems: list[str]
) -> None:
    """Trigger rule, condition and timeout."""
    label = show_id(tid)
    rule = spec.get("trigger_rule", "all_success")
    if not isinstance(rule, str):
        problems.append(f"{label}: 'trigger_rule' must be a string (a rule's name)")
    else:
        try:
            parse_trigger_rule(rule[:_MAX_RULE_CHARS])
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
    condition = spec.get("condition")
    if condition is not None and not isinstance(condition, str):
        problems.append(f"{label}: 'condition' must be a string (an expression)")
    elif condition is not None:
        try:
            parse_condition(condition, allowed_names=depends_on)
        except ConditionError as exc:
            problems.append(f"{label}: bad condition: {exc}")
    timeout = spec.get("timeout")
    if timeout is not None and not is_duration(timeout):
        problems.append(f"{label}: 'timeout' must be {DURATION}")


def _check_options(tid: str, task: Any, options: Any, problems: list[str]) -> None:
    """Queue and priority; a domain task only on its own domain's queue (a workflow must not
    carry it to another domain's workers, around queue isolation)."""
    label = show_id(tid)
    if not isinstance(options, Mapping):
        problems.append(f"{label}: 'options' must be a mapping")
        return
    for unknown in sorted(set(options) - OPTION_FIELDS, key=str):
        problems.append(f"{label}: unknown option {describe(unknown)} (allowed: queue, priority)")
    if "queue" in options and options["queue"] not in c.QUEUES:
        queue = describe(options["queue"])
        problems.append(f"{label}: unknown queue {queue}; known: {list(c.QUEUES)}")
    elif "queue" in options and isinstance(task, str):
        home = home_queue(task)
        if home is not None and home != options["queue"]:
            queue = describe(options["queue"])
            problems.append(f"{label}: {task} runs on {home}, not on {queue}")
    priority = options.get("priority")
    if priority is not None and (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not c.PRIORITY_MIN <= priority <= c.PRIORITY_MAX
    ):
        problems.append(
            f"{label}: priority must be an integer from {c.PRIORITY_MIN} to {c.PRIORITY_MAX}"
        )


def depends_on_of(spec: Mapping[str, Any]) -> list[str] | None:
    """The upstream ids (a single string allowed), or None when malformed."""
    deps = spec.get("depends_on", [])
    deps = [deps] if isinstance(deps, str) else deps
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        return None
    return deps


def check_task(
    tid: str,
    spec: Any,
    known_tasks: Collection[str] | None,
    policy: WorkflowTaskPolicy,
    problems: list[str],
) -> dict[str, Any] | None:
    """One task's own fields, checked; its fields as a WorkflowTask takes them when valid (its
    dependencies are checked across tasks, by the caller)."""
    label = show_id(tid)
    if not isinstance(spec, Mapping):
        problems.append(f"{label}: must be a mapping")
        return None
    before = len(problems)
    if not TASK_ID.fullmatch(tid):
        problems.append(f"{label}: task ids are 1-100 letters, digits, '_' or '-'")
    for unknown in sorted(set(spec) - TASK_FIELDS, key=str):
        problems.append(f"{label}: unknown field {describe(unknown)}")
    _check_call(tid, spec, known_tasks, policy, problems)
    depends_on = depends_on_of(spec)
    if depends_on is None:
        problems.append(f"{label}: 'depends_on' must be a list of task ids")
    _check_rules(tid, spec, depends_on or [], problems)
    _check_options(tid, spec.get("task"), spec.get("options", {}), problems)
    if len(problems) > before:
        return None
    condition, timeout = spec.get("condition"), spec.get("timeout")
    return {
        "id": tid,
        "task": str(spec["task"]),
        "args": list(spec.get("args", [])),
        "kwargs": dict(spec.get("kwargs", {})),
        "depends_on": list(depends_on or []),
        "condition": condition,
        "trigger_rule": str(spec.get("trigger_rule", "all_success")),
        "timeout": None if timeout is None else float(timeout),
        "options": dict(spec.get("options", {})),
    }
