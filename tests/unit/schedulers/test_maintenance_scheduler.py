"""The housekeeping beat entries: the nightly log cleanup and the minute-by-minute timeout sweep,
and the periodic alert evaluation (ALERTING_ENABLED), each naming its maintenance task at the
seed's lowest priority. The temp-file cleanup is the file domain's (test_file_scheduler.py)."""

from __future__ import annotations

import pytest
from celery.schedules import crontab

from personal_assistant.workers.config import load_settings
from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import (
    build_beat_entries,
    build_beat_schedule,
)
from personal_assistant.workers.schedulers.beat_entry import entry_from_data
from personal_assistant.workers.schedulers.maintenance_scheduler import (
    MAINTENANCE_PRIORITY,
    MAINTENANCE_SCHEDULE,
    alerting_schedule,
)

LOG_TASK = f"{TASKS_PACKAGE}.maintenance_tasks.cleanup_old_logs"
SWEEP_TASK = f"{TASKS_PACKAGE}.maintenance_tasks.sweep_workflow_timeouts"
ALERTS_TASK = f"{TASKS_PACKAGE}.maintenance_tasks.evaluate_alerts"


def test_the_maintenance_schedule_cleans_logs_at_three_at_night() -> None:
    schedule = build_beat_schedule(MAINTENANCE_SCHEDULE)

    assert schedule["cleanup-old-logs"]["task"] == LOG_TASK
    assert schedule["cleanup-old-logs"]["schedule"] == crontab(hour=3, minute=0)


def test_the_maintenance_entries_are_the_log_cleanup_and_the_timeout_sweep() -> None:
    schedule = build_beat_schedule(MAINTENANCE_SCHEDULE)

    assert {name: entry["task"] for name, entry in schedule.items()} == {
        "sweep-workflow-timeouts": SWEEP_TASK,
        "cleanup-old-logs": LOG_TASK,
    }
    # No entry passes arguments: each task runs with the limits of the settings.
    assert all("kwargs" not in entry for entry in schedule.values())


def test_the_temp_file_cleanup_is_no_longer_a_maintenance_entry() -> None:
    names = {entry.name for entry in MAINTENANCE_SCHEDULE}
    tasks = {entry.task for entry in MAINTENANCE_SCHEDULE}

    assert "cleanup-temp-files" not in names
    assert not any(".file_tasks." in task for task in tasks)


def test_every_maintenance_entry_runs_at_the_seeds_lowest_priority(
    clean_env: pytest.MonkeyPatch,
) -> None:
    entries = (*MAINTENANCE_SCHEDULE, *alerting_schedule(load_settings()))

    assert MAINTENANCE_PRIORITY == 1
    assert {entry.name: entry.options.get("priority") for entry in entries} == {
        "sweep-workflow-timeouts": 1,
        "cleanup-old-logs": 1,
        "evaluate-alerts": 1,
    }


def test_the_workflow_timeout_sweep_runs_every_sixty_seconds_without_overlap() -> None:
    [sweep] = [entry for entry in MAINTENANCE_SCHEDULE if entry.task == SWEEP_TASK]

    assert sweep.name == "sweep-workflow-timeouts"
    assert sweep.as_beat_entry() == {
        "task": SWEEP_TASK,
        "schedule": 60.0,
        "options": {"priority": MAINTENANCE_PRIORITY},
    }
    checked = entry_from_data(sweep.name, sweep.as_entry_data())
    assert (checked.interval, checked.no_overlap) == (60.0, True)


def test_alert_evaluation_runs_every_eval_interval_and_a_late_run_expires(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(alert_eval_interval=42.5)

    [entry] = alerting_schedule(settings)

    assert entry.name == "evaluate-alerts"
    assert entry.as_beat_entry() == {
        "task": ALERTS_TASK,
        "schedule": 42.5,
        "options": {"expires": 42.5, "priority": MAINTENANCE_PRIORITY},
    }
    checked = entry_from_data(entry.name, entry.as_entry_data())
    assert (checked.interval, checked.expires) == (42.5, 42.5)


def test_the_alert_evaluation_entry_merges_with_the_maintenance_entries(
    clean_env: pytest.MonkeyPatch,
) -> None:
    groups = (MAINTENANCE_SCHEDULE, alerting_schedule(load_settings()))

    expected = {"sweep-workflow-timeouts", "cleanup-old-logs", "evaluate-alerts"}
    assert set(build_beat_schedule(*groups)) == expected
    assert set(build_beat_entries(*groups)) == expected
