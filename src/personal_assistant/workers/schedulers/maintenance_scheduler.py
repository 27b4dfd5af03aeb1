"""Periodic housekeeping: log cleanup at night (UTC), workflow timeout sweeps, alert checks.

The log cleanup runs once a day, off the busy hours (the temp-file cleanup, a file task, is in
file_scheduler.py); the timeout sweep runs every minute. All are idempotent, so a run
delivered twice costs a directory walk or a few Redis reads. Priority 1, the seed's lowest:
housekeeping waits behind everything else on its queue.
"""

from __future__ import annotations

from celery.schedules import crontab

from personal_assistant.workers.config import WorkerSettings
from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import PeriodicTask

MAINTENANCE_PRIORITY = 1  # the seed's: maintenance is the lowest

MAINTENANCE_SCHEDULE: tuple[PeriodicTask, ...] = (
    # Backstop for workflow timeouts longer than MAX_COUNTDOWN or whose timer was lost; a
    # minute is the resolution users can expect for such long timeouts. No overlap: a sweep
    # still queued behind a busy maintenance queue makes the next one pointless.
    PeriodicTask(
        name="sweep-workflow-timeouts",
        task=f"{TASKS_PACKAGE}.maintenance_tasks.sweep_workflow_timeouts",
        schedule=60.0,
        options={"priority": MAINTENANCE_PRIORITY},
        no_overlap=True,
    ),
    # The seed's time: 03:00, an hour after the temp-file cleanup so they never compete for
    # the same disk.
    PeriodicTask(
        name="cleanup-old-logs",
        task=f"{TASKS_PACKAGE}.maintenance_tasks.cleanup_old_logs",
        schedule=crontab(hour=3, minute=0),
        options={"priority": MAINTENANCE_PRIORITY},
    ),
)


def alerting_schedule(settings: WorkerSettings) -> tuple[PeriodicTask, ...]:
    """The periodic alert evaluation (ALERTING_ENABLED): backlog and offline workers."""
    return (
        PeriodicTask(
            name="evaluate-alerts",
            task=f"{TASKS_PACKAGE}.maintenance_tasks.evaluate_alerts",
            schedule=settings.alert_eval_interval,
            # A run that waited longer than an interval is stale: the next one supersedes it.
            options={"expires": settings.alert_eval_interval, "priority": MAINTENANCE_PRIORITY},
        ),
    )
