"""Which Celery tasks a workflow may run: an explicit allow-list, checked at submit and dispatch.

A workflow definition comes from a file or a caller we do not control, and every worker shares
one task registry: without a list, a definition could run Celery's built-ins (``celery.chunks``
with a signature runs any task inline on whatever worker took it, around queue isolation) or
the maintenance tasks (``cleanup_old_logs`` with ``patterns: ["*"]`` deletes what it is told).

Allowed by default: the tasks of the domain modules meant for workflows (ai, email, file, sync),
judged by the module prefix of the task's name. Operators add names or ``fnmatch`` patterns
with ``WORKFLOW_ALLOWED_TASKS`` (``myapp.tasks.*``). Never allowed, whatever the settings say:
``celery.*`` and the maintenance module's tasks.

Pure logic: no Celery or Redis here. The definition validator (definition.py) reports
every refused task at submit; the runtime (runtime.py) checks again before it publishes
a ready task, so a definition stored before the list (or the settings) changed cannot run a task
that is no longer allowed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from personal_assistant.workers import constants as c

# The domain modules whose tasks are written to be run by workflows (the maintenance module is
# the operators' own housekeeping: it deletes files and drives the workflow runtime itself).
DOMAIN_TASK_MODULES: Final[tuple[str, ...]] = tuple(
    f"{c.TASKS_PACKAGE}.{module}"
    for module in ("ai_tasks", "email_tasks", "file_tasks", "sync_tasks")
)
MAINTENANCE_TASK_MODULE: Final = f"{c.TASKS_PACKAGE}.maintenance_tasks"

# Checked before any allowed pattern, so no setting (not even "*") can let these through.
NEVER_ALLOWED: Final[tuple[tuple[str, str], ...]] = (
    ("celery.", "Celery's built-in tasks (celery.*) never run in a workflow"),
    (f"{MAINTENANCE_TASK_MODULE}.", "maintenance tasks never run in a workflow"),
)
NOT_LISTED: Final = (
    "not on the allow-list (the ai, email, file and sync tasks, and WORKFLOW_ALLOWED_TASKS)"
)


def _in_domain_module(name: str) -> bool:
    """``name`` is ``<domain module>.<function>``: one identifier after the module, no deeper."""
    for module in DOMAIN_TASK_MODULES:
        if name.startswith(module) and name[len(module) : len(module) + 1] == ".":
            return name[len(module) + 1 :].isidentifier()
    return False


@dataclass(frozen=True)
class WorkflowTaskPolicy:
    """The tasks a workflow may run: the domain tasks plus ``allowed_patterns`` (fnmatch,
    case-sensitive), never Celery's built-ins or the maintenance tasks."""

    allowed_patterns: tuple[str, ...] = ()
    # Decisions per task name: the same few names are checked on every dispatch.
    _decided: dict[str, str | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> WorkflowTaskPolicy:
        """A policy adding ``patterns`` (blank entries ignored, surrounding spaces dropped)."""
        return cls(tuple(p.strip() for p in patterns if p.strip()))

    def refusal(self, name: object) -> str | None:
        """Why a workflow may not run the task ``name``; None when it may."""
        if not isinstance(name, str):
            return "a task name is a string"
        if name in self._decided:
            return self._decided[name]
        reason = self._decide(name)
        if len(self._decided) < _MAX_REMEMBERED:
            self._decided[name] = reason
        return reason

    def allows(self, name: object) -> bool:
        """True when a workflow may run the task ``name``."""
        return self.refusal(name) is None

    def _decide(self, name: str) -> str | None:
        for prefix, reason in NEVER_ALLOWED:
            if name.startswith(prefix):
                return reason
        if _in_domain_module(name):
            return None
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.allowed_patterns):
            return None
        return NOT_LISTED


# Names are registered tasks in practice (a handful); the cap only bounds a caller that checks
# many arbitrary names through one policy.
_MAX_REMEMBERED: Final = 1024

DEFAULT_POLICY: Final = WorkflowTaskPolicy()
