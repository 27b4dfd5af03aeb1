"""Connects workflow tasks' starts and ends (Celery signals, through hooks.py) to the runtime.

Only messages dispatched by the runtime carry the ``pa_workflow`` headers; for every other task
the hook costs one attribute lookup. A retry is not an end (Celery's postrun state is RETRY),
and a task redelivered after its end finds its status final and changes nothing.
"""

from __future__ import annotations

import logging
import time
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
    """Records workflow task ends (with their start time) and publishes the tasks they unblock.

    The start is kept in memory and written with the end: a write per start would sit on every
    hop's path. While a task runs, ``workflow_status`` reads "running" from Celery's own
    STARTED state (``task_track_started``).
    """

    name = "workflows"

    def __init__(self, app: Any) -> None:
        self.app = app
        self._started: dict[str, float] = {}

    def on_task_prerun(self, *, task: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """A workflow task started: remember when."""
        if _workflow_of(task) is not None:
            self._started.setdefault(task_id, time.time())

    def on_task_postrun(self, *, task: Any, task_id: str, state: str | None, retval: Any) -> None:
        """A workflow task ended for good: record it and publish its ready dependents."""
        found = _workflow_of(task)
        if found is None:
            return
        if state == states.SUCCESS:
            runtime.record_task_event(
                self.app,
                *found,
                Status.COMPLETED,
                result=retval,
                started_at=self._started.pop(task_id, None),
            )
        elif state == states.FAILURE:
            runtime.record_task_event(
                self.app,
                *found,
                Status.FAILED,
                error=f"{type(retval).__name__}: {retval}",
                started_at=self._started.pop(task_id, None),
            )
        # RETRY, IGNORED, REJECTED: not finished; the real end comes later (keep the start).
