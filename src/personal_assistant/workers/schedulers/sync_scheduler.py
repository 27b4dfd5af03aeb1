"""The calendar sync's beat entry: every configured feed, hourly on the hour (the seed's).

A feed that did not change answers 304 to the conditional GET, so an hourly sync of an idle
calendar costs one small request per feed.
"""

from __future__ import annotations

from celery.schedules import crontab

from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import PeriodicTask

SYNC_SCHEDULE: tuple[PeriodicTask, ...] = (
    PeriodicTask(
        name="sync-calendar-events",
        task=f"{TASKS_PACKAGE}.sync_tasks.sync_calendar_events",
        schedule=crontab(minute=0),
    ),
)
