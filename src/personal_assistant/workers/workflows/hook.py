"""Connects workflow tasks' starts and ends to the runtime (Celery signals, through hooks/).

Only messages dispatched by the runtime carry the ``pa_workflow`` headers; for every other task
the hook costs one attribute lookup. A retry is not an end (Celery's postrun state is RETRY),
and a task redelivered after its end finds its status final and changes nothing.

A success is recorded where Celery's own ``chain`` publishes its next step, before the result
is stored, through the link every workflow message carries (link.py), which finds this hook as
``app.workflow_hook``. If that early record fails, postrun records the success instead; failures
are always recorded at postrun (Celery calls errbacks only after storing the failure anyway).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from celery import states

from personal_assistant.workers.hooks.registry import WorkerHook
from personal_assistant.workers.workflows import runtime
from personal_assistant.workers.workflows.trigger_rules import Status

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

logger = logging.getLogger(__name__)


def _workflow_of(task: Any) -> tuple[str, str] | None:
    request = getattr(task, "request", None)
    workflow_id = getattr(request, runtime.HEADER_WORKFLOW, None)
    task_id = getattr(request, runtime.HEADER_TASK, None)
    if workflow_id and task_id:
        return str(workflow_id), str(task_id)
    return None


def _row_of(task: Any) -> Any:
    """The task's state row its message carried (validated by the runtime before use)."""
    return getattr(getattr(task, "request", None), runtime.HEADER_ROW, None)


def _dependents_of(task: Any) -> list[str] | None:
    """The dependents the task's message names (a hint: absent on older messages)."""
    named = getattr(getattr(task, "request", None), runtime.HEADER_NEXT, None)
    if isinstance(named, list) and all(isinstance(t, str) for t in named):
        return named
    return None


class WorkflowHook(WorkerHook):
    """Records workflow task ends (with their start time) and publishes the tasks they unblock.

    The start is kept in memory and written with the end: a write per start would sit on every
    hop's path. While a task runs, ``workflow_status`` reads "running" from Celery's own
    STARTED state, which this hook stores for workflow tasks (or Celery, for every task, with
    ``task_track_started``).
    """

    name = "workflows"

    def __init__(self, app: WorkerApp) -> None:
        self.app = app
        self._started: dict[str, float] = {}
        self._recorded: set[str] = set()

    def on_task_prerun(self, *, task: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """A workflow task started: remember when, and store Celery's STARTED state for
        ``workflow status`` (unless Celery stores it itself: ``task_track_started``)."""
        if _workflow_of(task) is None:
            return
        self._started.setdefault(task_id, time.time())
        if not task.track_started:
            # Written for workflow tasks only: they are the ones whose "running" someone reads;
            # for every task it would cost each a result-backend round trip (TASK_TRACK_STARTED).
            request = task.request
            started = {"pid": os.getpid(), "hostname": request.hostname}
            store_soon = getattr(task.backend, "store_started_soon", None)
            if store_soon is not None:  # broker/results.py: no round trip on the hop's path
                store_soon(task_id, started, request=request)
            else:
                task.backend.store_result(task_id, started, states.STARTED, request=request)

    def record_success(self, retval: Any) -> None:
        """The running workflow task returned ``retval``: record it before Celery stores it.

        Never raises (Celery would turn the error into the task's failure): when recording
        fails here, it is logged and postrun records the success instead.
        """
        task = self.app.current_worker_task
        found = _workflow_of(task)
        if task is None or found is None:
            return
        task_id = str(task.request.id)
        try:
            self._record(
                *found,
                task_id,
                Status.COMPLETED,
                result=retval,
                dependents=_dependents_of(task),
                row=_row_of(task),
            )
        except Exception:
            logger.exception("workflow %s: early record of %s failed; retried at postrun", *found)
            return
        self._recorded.add(task_id)

    def on_task_postrun(self, *, task: Any, task_id: str, state: str | None, retval: Any) -> None:
        """A workflow task ended for good: record it (unless its link did), publish dependents."""
        found = _workflow_of(task)
        if found is None:
            return
        if task_id in self._recorded:
            # Its link recorded the success before the result store. If Celery then failed to
            # store the result (and calls the task failed), the first end stands, as the next
            # step of a chain would already have been sent.
            self._recorded.discard(task_id)
            return
        dependents = _dependents_of(task)
        row = _row_of(task)
        if state == states.SUCCESS:
            self._record(
                *found, task_id, Status.COMPLETED, result=retval, dependents=dependents, row=row
            )
        elif state == states.FAILURE:
            error = f"{type(retval).__name__}: {retval}"
            self._record(
                *found, task_id, Status.FAILED, error=error, dependents=dependents, row=row
            )
        # RETRY, IGNORED, REJECTED: not finished; the real end comes later (keep the start).

    def _record(
        self,
        workflow_id: str,
        wf_task_id: str,
        task_id: str,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        dependents: list[str] | None = None,
        row: Any = None,
    ) -> None:
        runtime.record_task_event(
            self.app,
            workflow_id,
            wf_task_id,
            status,
            result=result,
            error=error,
            started_at=self._started.get(task_id),
            dependents=dependents,
            row=row,
        )
        self._started.pop(task_id, None)  # only once recorded: a failed early try keeps it
