"""Beat entries: merged per domain, duplicates and foreign tasks refused, all registered."""

from __future__ import annotations

import pytest
from celery.schedules import crontab

from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import PeriodicTask, build_beat_schedule

TEMP_TASK = f"{TASKS_PACKAGE}.file_tasks.cleanup_temp_files"
LOG_TASK = f"{TASKS_PACKAGE}.maintenance_tasks.cleanup_old_logs"


def test_entries_of_several_groups_are_merged_by_name() -> None:
    first = [PeriodicTask("a", TEMP_TASK, 60.0)]
    second = [PeriodicTask("b", LOG_TASK, crontab(minute=5), kwargs={"dry_run": True})]

    schedule = build_beat_schedule(first, second)

    assert schedule == {
        "a": {"task": TEMP_TASK, "schedule": 60.0},
        "b": {"task": LOG_TASK, "schedule": crontab(minute=5), "kwargs": {"dry_run": True}},
    }


def test_an_entry_carries_its_options() -> None:
    entry = PeriodicTask("a", TEMP_TASK, 60.0, options={"expires": 30})

    assert entry.as_beat_entry() == {
        "task": TEMP_TASK,
        "schedule": 60.0,
        "options": {"expires": 30},
    }


def test_the_beat_entry_is_a_copy_the_caller_may_change() -> None:
    entry = PeriodicTask("a", TEMP_TASK, 60.0, kwargs={"dry_run": True})

    entry.as_beat_entry()["kwargs"]["dry_run"] = False

    assert entry.kwargs == {"dry_run": True}


def test_two_entries_of_the_same_name_are_refused() -> None:
    first = [PeriodicTask("nightly", TEMP_TASK, 60.0)]
    second = [PeriodicTask("nightly", LOG_TASK, 120.0)]

    with pytest.raises(ValueError, match="two beat entries are named 'nightly'"):
        build_beat_schedule(first, second)


def test_the_same_name_twice_in_one_group_is_refused() -> None:
    group = [PeriodicTask("x", TEMP_TASK, 60.0), PeriodicTask("x", TEMP_TASK, 60.0)]

    with pytest.raises(ValueError, match="'x'"):
        build_beat_schedule(group)


@pytest.mark.parametrize(
    "task",
    [
        "celery.backend_cleanup",
        "tasks.file_tasks.cleanup_temp_files",
        f"{TASKS_PACKAGE}_extra.job",  # only shares the prefix, not the package
        TASKS_PACKAGE,
    ],
)
def test_a_task_outside_the_task_package_is_refused(task: str) -> None:
    with pytest.raises(ValueError, match=f"outside {TASKS_PACKAGE}"):
        build_beat_schedule([PeriodicTask("foreign", task, 60.0)])


def test_the_apps_beat_schedule_names_registered_tasks(producer_app: WorkerApp) -> None:
    producer_app.loader.import_default_modules()
    schedule = producer_app.conf.beat_schedule

    assert {"cleanup-temp-files", "cleanup-old-logs"} <= set(schedule)
    for name, entry in schedule.items():
        assert entry["task"] in producer_app.tasks, f"{name} names an unregistered task"
