"""The housekeeping beat entries: the nightly cleanups and the minute-by-minute timeout sweep,
and the periodic alert evaluation (ALERTING_ENABLED), each naming its maintenance task."""

from __future__ import annotations

import pytest
from celery.schedules import crontab

from personal_assistant.workers.config import load_settings
from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import build_beat_schedule
from personal_assistant.workers.schedulers.maintenance_scheduler import (
    MAINTENANCE_SCHEDULE,
    alerting_schedule,
)

TEMP_TASK = f"{TASKS_PACKAGE}.file_tasks.cleanup_temp_files"
LOG_TASK = f"{TASKS_PACKAGE}.maintenance_tasks.cleanup_old_logs"
SWEEP_TASK = f"{TASKS_PACKAGE}.maintenance_tasks.sweep_workflow_timeouts"
ALERTS_TASK = f"{TASKS_PACKAGE}.maintenance_tasks.evaluate_alerts"


def test_the_maintenance_schedule_cleans_temp_files_and_logs_at_night() -> None:
    schedule = build_beat_schedule(MAINTENANCE_SCHEDULE)

    assert schedule["cleanup-temp-files"]["task"] == TEMP_TASK
    assert schedule["cleanup-temp-files"]["schedule"] == crontab(hour=2, minute=0)
    assert schedule["cleanup-old-logs"]["task"] == LOG_TASK
    assert schedule["cleanup-old-logs"]["schedule"] == crontab(hour=3, minute=0)


def test_the_maintenance_entries_are_the_two_cleanups_and_the_timeout_sweep() -> None:
    schedule = build_beat_schedule(MAINTENANCE_SCHEDULE)

    assert {name: entry["task"] for name, entry in schedule.items()} == {
        "cleanup-temp-files": TEMP_TASK,
        "sweep-workflow-timeouts": SWEEP_TASK,
        "cleanup-old-logs": LOG_TASK,
    }
    # No entry passes arguments: each task runs with the limits of the settings.
    assert all("kwargs" not in entry for entry in schedule.values())


def test_the_workflow_timeout_sweep_runs_every_sixty_seconds() -> None:
    [sweep] = [entry for entry in MAINTENANCE_SCHEDULE if entry.task == SWEEP_TASK]

    assert sweep.name == "sweep-workflow-timeouts"
    assert sweep.schedule == 60.0
    assert sweep.as_beat_entry() == {"task": SWEEP_TASK, "schedule": 60.0}


def test_alert_evaluation_runs_every_eval_interval_and_a_late_run_expires(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(alert_eval_interval=42.5)

    [entry] = alerting_schedule(settings)

    assert entry.name == "evaluate-alerts"
    assert entry.as_beat_entry() == {
        "task": ALERTS_TASK,
        "schedule": 42.5,
        "options": {"expires": 42.5},
    }


def test_the_alert_evaluation_entry_merges_with_the_maintenance_entries(
    clean_env: pytest.MonkeyPatch,
) -> None:
    schedule = build_beat_schedule(MAINTENANCE_SCHEDULE, alerting_schedule(load_settings()))

    assert set(schedule) == {
        "cleanup-temp-files",
        "sweep-workflow-timeouts",
        "cleanup-old-logs",
        "evaluate-alerts",
    }
