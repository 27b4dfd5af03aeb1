"""Sending one run of a beat entry: its task, or its workflow; and the run's id.

Shared by beat and by ``celery ... schedule run-now``. A run's id is derived from the entry and
its time (uuid5), so every beat computes the same one and a run re-published by the next lock
holder carries the id of the first attempt. A periodic workflow is submitted with that id,
which makes its submission idempotent (workflows/runtime.submit_workflow).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Final

from personal_assistant.workers.schedulers.beat_entry import BeatEntry
from personal_assistant.workers.workflows import runtime as workflow_runtime

logger = logging.getLogger(__name__)

# The namespace of run ids (any fixed UUID: it only has to be the same on every beat).
RUN_ID_NAMESPACE: Final = uuid.UUID("6f1d7c2e-5b8a-4e0f-9d3c-2a7b1e4c8f60")
# Headers on every message beat sends: which entry and which of its times.
ENTRY_HEADER: Final = "pa_beat_entry"
DUE_HEADER: Final = "pa_beat_due"


def run_id(entry: BeatEntry, due: float) -> str:
    """The id of the run of ``entry`` due at ``due``: a task id, or a workflow id (hex)."""
    value = uuid.uuid5(RUN_ID_NAMESPACE, f"{entry.name}@{due!r}")
    return value.hex if entry.workflow is not None else str(value)


def send_run(app: Any, entry: BeatEntry, task_id: str, due: float, producer: Any = None) -> None:
    """Publish the run ``task_id`` of ``entry`` for its time ``due`` (Unix seconds): the task
    with the entry's arguments and options, or the entry's workflow."""
    if entry.workflow is not None:
        workflow_runtime.submit_workflow(entry.workflow, app=app, workflow_id=task_id)
        logger.info("beat: %s submitted workflow %s", entry.name, task_id)
        return
    options: dict[str, Any] = {}
    if entry.queue is not None:
        options["queue"] = entry.queue
    if entry.priority is not None:
        options["priority"] = entry.priority
    if entry.expires is not None:
        options["expires"] = entry.expires
    app.send_task(
        entry.task,
        args=list(entry.args),
        kwargs=dict(entry.kwargs),
        task_id=task_id,
        producer=producer,
        headers={ENTRY_HEADER: entry.name, DUE_HEADER: repr(due)},
        **options,
    )
    logger.info("beat: sending due task %s (%s)", entry.name, entry.task)
