"""The calendar sync's beat entry: every configured feed, hourly on the hour (the seed's).

A feed that did not change answers 304 to the conditional GET, so an hourly sync of an idle
calendar costs one small request per feed. Priority 7 (the seed's "medium-high"). No overlap:
a sync still running after an hour (a slow feed server) is not joined by a second one on the
same feeds. A jitter of up to a minute, so the deployments of many users do not all fetch
their feeds from one provider at the top of the hour.
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
        options={"priority": 7},
        no_overlap=True,
        jitter=60.0,
    ),
)
