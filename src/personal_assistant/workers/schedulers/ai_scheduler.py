"""AI jobs for the backend: schedule, change, disable and delete them; and their beat entry.

The backend calls :func:`schedule_ai_job` to create a job (or change the job of that name)::

    schedule_ai_job("morning-brief", "Summarise my day.", cron="0 7 * * mon-fri",
                    timezone="Europe/Berlin")
    schedule_ai_job("inbox-triage", "Sort the new mail.", interval=timedelta(hours=2))

and reads the result with :func:`ai_job_status`. The job's own schedule (a cron expression in
its time zone, or an interval; see ai/schedule.py) decides when it is due; the beat entry below
decides how often due jobs are looked for (every ten minutes, the seed's), so a job runs at
most that long after its time. Each function works on the store of ``settings``
(DATABASE_URL; the environment's when omitted), which must be migrated
(``celery -A personal_assistant.workers.celery_app db upgrade``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from personal_assistant.workers.ai import jobs
from personal_assistant.workers.ai.schedule import ScheduleError
from personal_assistant.workers.config import WorkerSettings, load_settings
from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import PeriodicTask
from personal_assistant.workers.store.base import utcnow
from personal_assistant.workers.store.engine import session_scope

AI_SCHEDULE: tuple[PeriodicTask, ...] = (
    PeriodicTask(
        name="process-due-ai-tasks",
        task=f"{TASKS_PACKAGE}.ai_tasks.process_due_ai_tasks",
        schedule=crontab(minute="*/10"),
        options={"priority": 10},  # the seed's: AI is the highest (clamped to 9 on Redis)
        # A sweep that is still running (model calls take minutes) is not joined by a second.
        no_overlap=True,
    ),
)


def _store_url(settings: WorkerSettings | None) -> str:
    url = (settings or load_settings()).store_url
    if not jobs.has_ai_tables(url):
        raise RuntimeError(
            "the store has no AI tables: run "
            "`celery -A personal_assistant.workers.celery_app db upgrade`"
        )
    return url


def _interval_seconds(interval: int | timedelta | None) -> int | None:
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
        if seconds != int(seconds):
            raise ScheduleError(f"interval must be whole seconds, got {seconds} s")
        return int(seconds)
    return interval


def schedule_ai_job(
    name: str,
    prompt: str,
    *,
    cron: str | None = None,
    interval: int | timedelta | None = None,
    timezone: str = "UTC",
    system_prompt: str | None = None,
    model: str | None = None,
    enabled: bool = True,
    settings: WorkerSettings | None = None,
) -> int:
    """Create the AI job ``name``, or change the job of that name; return its id.

    Exactly one of ``cron`` (five fields, in ``timezone``) and ``interval`` (seconds or a
    timedelta, at least a minute). ``model`` None uses AI_MODEL. A new or rescheduled job first
    runs at its schedule's next time. Raises ValueError (JobError, ScheduleError) naming the
    bad argument; nothing is stored then.
    """
    spec = jobs.JobSpec(
        name=name,
        prompt=prompt,
        cron=cron,
        interval_seconds=_interval_seconds(interval),
        timezone=timezone,
        system_prompt=system_prompt,
        model=model,
        enabled=enabled,
    )
    spec.checked()  # a bad argument is reported before the store is touched
    with session_scope(_store_url(settings)) as session:
        return jobs.upsert_job(session, spec, utcnow())


def disable_ai_job(name: str, *, settings: WorkerSettings | None = None) -> bool:
    """Stop scheduling the job ``name`` (a run in progress finishes); False if there is none.
    ``schedule_ai_job(..., enabled=True)`` enables it again from its next time."""
    with session_scope(_store_url(settings)) as session:
        return jobs.set_enabled(session, name, False, utcnow())


def delete_ai_job(name: str, *, settings: WorkerSettings | None = None) -> bool:
    """Delete the job ``name`` and its runs; False if there is none."""
    with session_scope(_store_url(settings)) as session:
        return jobs.delete_job(session, name)


def ai_job_status(name: str, *, settings: WorkerSettings | None = None) -> dict[str, Any] | None:
    """The job ``name`` (schedule, next and last run, last answer or error, token totals) as
    JSON-ready data; None if there is none."""
    with session_scope(_store_url(settings)) as session:
        job = jobs.get_job(session, name)
        return jobs.describe_job(job) if job is not None else None
