"""Seed path for task dependencies: the state machine (``workflows.state_machine``) and the
two module functions the contract names, which run a workflow on the deployment's app.

``submit_workflow`` and ``workflow_status`` take the app to use; without one they use the app
``celery -A personal_assistant.workers.celery_app`` builds, as the seed's callers expect. That
is why this facade, and no library module, may import the composition root.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from personal_assistant.workers.workflows import runtime
from personal_assistant.workers.workflows.conditions import ConditionError
from personal_assistant.workers.workflows.dag import CycleError
from personal_assistant.workers.workflows.state_machine import (
    DependencyScheduler,
    TaskDependency,
    TaskState,
)
from personal_assistant.workers.workflows.trigger_rules import Status, TriggerRule

__all__ = [
    "ConditionError",
    "CycleError",
    "DependencyScheduler",
    "Status",
    "TaskDependency",
    "TaskState",
    "TriggerRule",
    "submit_workflow",
    "workflow_status",
]


def _deployment_app() -> Any:
    # Imported when called, not at import: importing this module must not build the app.
    from personal_assistant.workers.celery_app import app  # noqa: PLC0415

    return app


def submit_workflow(definition: Mapping[str, Any], *, app: Any = None) -> str:
    """Validate and start a workflow; return its id (see ``workflows.runtime``)."""
    return runtime.submit_workflow(definition, app=app or _deployment_app())


def workflow_status(workflow_id: str, *, app: Any = None) -> dict[str, Any]:
    """The workflow's state and per-task states, times and errors (see ``workflows.runtime``)."""
    return runtime.workflow_status(workflow_id, app=app or _deployment_app())
