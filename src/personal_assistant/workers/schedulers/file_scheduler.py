"""The file domain's beat entry: the temp-file cleanup, nightly at 02:00 UTC (the seed's).

Priority 3 (the seed's "low"), and a jitter of up to five minutes: the cleanup walks a
directory tree, and on a host running several deployments the walks need not start at the
same second. The cleanup is idempotent, so catching up after an outage runs it once.
"""

from __future__ import annotations

from celery.schedules import crontab

from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import PeriodicTask

FILE_SCHEDULE: tuple[PeriodicTask, ...] = (
    PeriodicTask(
        name="cleanup-temp-files",
        task=f"{TASKS_PACKAGE}.file_tasks.cleanup_temp_files",
        schedule=crontab(hour=2, minute=0),
        options={"priority": 3},
        jitter=300.0,
    ),
)
