"""The file domain's beat entry (schedulers/file_scheduler.py): the temp-file cleanup, nightly
at 02:00 UTC at the seed's low priority, jittered by up to five minutes, on the file queue."""

from __future__ import annotations

from datetime import UTC, datetime

from celery.schedules import crontab

from personal_assistant.workers import constants as c
from personal_assistant.workers.routing import queue_for_task
from personal_assistant.workers.schedulers.base_scheduler import build_beat_schedule
from personal_assistant.workers.schedulers.beat_entry import entry_from_data
from personal_assistant.workers.schedulers.beat_timing import jitter_offset, next_time
from personal_assistant.workers.schedulers.file_scheduler import FILE_SCHEDULE
from personal_assistant.workers.schedulers.maintenance_scheduler import MAINTENANCE_SCHEDULE

TEMP_TASK = f"{c.TASKS_PACKAGE}.file_tasks.cleanup_temp_files"


def test_the_file_schedule_is_the_temp_file_cleanup_at_two_at_night() -> None:
    schedule = build_beat_schedule(FILE_SCHEDULE)

    assert schedule == {
        "cleanup-temp-files": {
            "task": TEMP_TASK,
            "schedule": crontab(hour=2, minute=0),
            "options": {"priority": 3},
        }
    }


def test_the_cleanup_runs_on_the_file_queue() -> None:
    [cleanup] = FILE_SCHEDULE

    assert queue_for_task(cleanup.task) == c.FILE_QUEUE


def test_the_cleanup_is_jittered_by_up_to_five_minutes_in_utc() -> None:
    [cleanup] = FILE_SCHEDULE

    entry = entry_from_data(cleanup.name, cleanup.as_entry_data())

    assert entry.cron is not None
    assert (entry.cron.text, entry.timezone, entry.jitter) == ("0 2 * * *", "UTC", 300.0)
    assert (entry.priority, entry.misfire, entry.no_overlap) == (3, "run_once", False)


def test_the_jittered_cleanup_is_always_sent_before_the_log_cleanup_starts() -> None:
    [cleanup] = FILE_SCHEDULE
    [logs] = [entry for entry in MAINTENANCE_SCHEDULE if entry.name == "cleanup-old-logs"]
    temp_entry = entry_from_data(cleanup.name, cleanup.as_entry_data())
    log_entry = entry_from_data(logs.name, logs.as_entry_data())
    night = datetime(2027, 1, 4, tzinfo=UTC).timestamp()

    for day in range(30):
        start = night + day * 86_400
        temp_due = next_time(temp_entry, start)
        assert temp_due + jitter_offset(temp_entry, temp_due) < next_time(log_entry, start)
