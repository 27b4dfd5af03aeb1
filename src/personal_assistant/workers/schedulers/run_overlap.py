"""Whether a beat entry's previous run is still going, for the ``no_overlap`` pattern.

A task run is going until its result is ready (SUCCESS, FAILURE or REVOKED in the result
backend): queued, reserved, started or waiting to retry all count, since a second run sent
then would queue behind the first and run on the same data. A periodic workflow is going while
its state is ``running``. A run older than the result backend's expiry is taken as done: its
result, had it finished, is gone by then, and an entry must not be blocked forever by a run
whose message was lost.
"""

from __future__ import annotations

import json
import time
from typing import Any

from celery import states

from personal_assistant.workers import keys
from personal_assistant.workers.schedulers.beat_entry import BeatEntry
from personal_assistant.workers.workflows.runtime import redis_for


def still_running(
    app: Any, entry: BeatEntry, last_run_id: str, claimed_at: float | None, now: float | None = None
) -> bool:
    """True while the run ``last_run_id`` of ``entry``, claimed at ``claimed_at`` (Redis's
    clock), is queued or running; False when it ended, is unknown, or is too old to tell."""
    if not last_run_id or claimed_at is None:
        return False
    expires = app.conf.result_expires
    horizon = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
    if horizon and (time.time() if now is None else now) - claimed_at > float(horizon):
        return False
    if entry.workflow is not None:
        raw = redis_for(app).hget(keys.workflow_meta_key(last_run_id), "state")
        return raw is not None and json.loads(raw) == "running"
    return app.AsyncResult(last_run_id).state not in states.READY_STATES
