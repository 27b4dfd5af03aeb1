"""Periodic housekeeping: temp-file and log cleanup at night (UTC), workflow timeout sweeps.

The two cleanups run once a day, off the busy hours; the timeout sweep runs every minute. All
three are idempotent, so a run delivered twice costs a directory walk or a few Redis reads.
"""

from __future__ import annotations

from celery.schedules import crontab

from personal_assistant.workers.config import WorkerSettings
from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import PeriodicTask

# The seed's times: temp files at 02:00 and logs at 03:00, an hour apart so they never compete
# for the same disk.
MAINTENANCE_SCHEDULE: tuple[PeriodicTask, ...] = (
    PeriodicTask(
        name="cleanup-temp-files",
        task=f"{TASKS_PACKAGE}.file_tasks.cleanup_temp_files",
        schedule=crontab(hour=2, minute=0),
    ),
    # Backstop for workflow timeouts longer than MAX_COUNTDOWN or whose timer was lost; a
    # minute is the resolution users can expect for such long timeouts.
    PeriodicTask(
        name="sweep-workflow-timeouts",
        task=f"{TASKS_PACKAGE}.maintenance_tasks.sweep_workflow_timeouts",
        schedule=60.0,
    ),
    PeriodicTask(
        name="cleanup-old-logs",
        task=f"{TASKS_PACKAGE}.maintenance_tasks.cleanup_old_logs",
        schedule=crontab(hour=3, minute=0),
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
            options={"expires": settings.alert_eval_interval},
        ),
    )
