"""Connects workflow tasks' starts and ends (Celery signals, through hooks.py) to the runtime.

Only messages dispatched by the runtime carry the ``pa_workflow`` headers; for every other task
the hook costs one attribute lookup. A retry is not an end (Celery's postrun state is RETRY),
and a task redelivered after its end finds its status final and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states

from personal_assistant.workers.hooks import WorkerHook
from personal_assistant.workers.schedulers import workflow_runtime as runtime
from personal_assistant.workers.schedulers.trigger_rules import Status

logger = logging.getLogger(__name__)


def _workflow_of(task: Any) -> tuple[str, str] | None:
    request = getattr(task, "request", None)
    workflow_id = getattr(request, runtime.HEADER_WORKFLOW, None)
    task_id = getattr(request, runtime.HEADER_TASK, None)
    if workflow_id and task_id:
        return str(workflow_id), str(task_id)
    return None


class WorkflowHook(WorkerHook):
    """Records workflow task starts and ends, and dispatches the tasks that became ready."""

    name = "workflows"

    def __init__(self, app: Any) -> None:
        self.app = app

    def on_task_prerun(self, *, task: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """A workflow task started: mark it running."""
        found = _workflow_of(task)
        if found is not None:
            runtime.mark_running(self.app, *found)

    def on_task_postrun(self, *, task: Any, task_id: str, state: str | None, retval: Any) -> None:
        """A workflow task ended for good: record it and dispatch its ready dependents."""
        found = _workflow_of(task)
        if found is None:
            return
        if state == states.SUCCESS:
            runtime.record_task_event(self.app, *found, Status.COMPLETED, result=retval)
        elif state == states.FAILURE:
            error = f"{type(retval).__name__}: {retval}"
            runtime.record_task_event(self.app, *found, Status.FAILED, error=error)
        # RETRY, IGNORED, REJECTED: the task is not finished; its real end comes later.
