"""Tasks of the maintenance domain (queue ``maintenance_tasks``): log retention and upkeep.

All tasks here are idempotent (cleanup of what is gone, timeout checks decided in Redis), so
redelivery after a lost worker is safe.
"""

from __future__ import annotations

from typing import Any

from personal_assistant.workers.alerting.evaluator import evaluate_state_rules
from personal_assistant.workers.celery_app import app
from personal_assistant.workers.cleanup.tree import validate_patterns
from personal_assistant.workers.constants import QUEUES
from personal_assistant.workers.monitoring.liveness import WorkerRegistry
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.tasks.base_tasks import BaseTask
from personal_assistant.workers.tasks.file_tasks import (
    check_dry_run,
    effective_max_age,
    narrowing_patterns,
    run_cleanup,
)
from personal_assistant.workers.workflows import runtime as workflow_runtime


@app.task(base=BaseTask, bind=True)
def cleanup_old_logs(
    self: BaseTask,
    max_age_days: float | None = None,
    patterns: list[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Delete log files older than the max age under LOG_DIRS; report what was freed.

    Only files matching LOG_FILE_PATTERNS (``*.log``, rotated ``*.log.N`` and ``*.log.gz``)
    are candidates; directories are kept, since log shippers watch them. Arguments only narrow
    the settings (see ``file_tasks``): ``max_age_days`` applies when it exceeds
    LOG_MAX_AGE_DAYS, ``patterns`` further restricts LOG_FILE_PATTERNS.
    """
    settings = self.settings
    max_age = effective_max_age(
        settings.log_max_age_days,
        max_age_days,
        unit="days",
        setting="LOG_MAX_AGE_DAYS",
        argument="max_age_days",
    )
    return run_cleanup(
        self,
        what="cleanup_old_logs",
        settings=settings,
        roots=settings.cleanup_log_roots,
        max_age=max_age,
        patterns=validate_patterns(settings.log_file_patterns, "LOG_FILE_PATTERNS"),
        narrow_to=narrowing_patterns(patterns),
        dry_run=check_dry_run(dry_run),
        remove_empty_dirs=False,
    )


@app.task(base=BaseTask, bind=True)
def check_workflow_timeouts(self: BaseTask, workflow_id: str) -> list[str]:
    """Time out one workflow's tasks that waited too long; returns the tasks that became ready."""
    return workflow_runtime.check_timeouts(self.app, workflow_id)


@app.task(base=BaseTask, bind=True)
def sweep_workflow_timeouts(self: BaseTask) -> int:
    """Check every open workflow for timeouts (beat backstop for long or lost timers)."""
    return workflow_runtime.sweep_open_workflows(self.app)


@app.task(base=BaseTask, bind=True)
def evaluate_alerts(self: BaseTask) -> int:
    """Evaluate the state alert rules (queue backlog, offline workers) once, across workers.

    Returns the number of notifications sent, or -1 when another worker was evaluating.
    """
    alerting = self.app.periodic_alerting
    client = alerting.client
    snapshot: dict[str, Any] = {}
    if client is not None:
        snapshot["queues"] = queue_depths(client, list(QUEUES))
        registry = WorkerRegistry(client, down_after=self.settings.worker_down_after)
        snapshot["workers"] = {w.hostname: w.up for w in registry.workers()}
    sent = evaluate_state_rules(alerting, snapshot)
    alerting.dispatcher.flush(timeout=30.0)  # the child may be recycled right after
    return sent


@app.task(base=BaseTask, bind=True)
def probe(self: BaseTask) -> dict[str, Any]:
    """Answer where it ran: proves end to end that this queue has a live worker."""
    return self.describe_execution()
