"""Beat entries: merged per domain, duplicates and foreign tasks refused, all registered; and the
same entries with their patterns in the enhanced scheduler's format (crontab, intervals and
options mapped, what it cannot run refused, periodic workflows kept out of Celery's schedule)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery.schedules import crontab, schedule, solar

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.schedulers.base_scheduler import (
    PeriodicTask,
    build_beat_entries,
    build_beat_schedule,
    options_data,
    schedule_data,
)
from personal_assistant.workers.schedulers.beat_entry import entry_from_data

TEMP_TASK = f"{TASKS_PACKAGE}.file_tasks.cleanup_temp_files"
LOG_TASK = f"{TASKS_PACKAGE}.maintenance_tasks.cleanup_old_logs"
SYNC_TASK = f"{TASKS_PACKAGE}.sync_tasks.sync_calendar_events"
WORKFLOW = {"name": "nightly-digest", "tasks": {"sync": {"task": SYNC_TASK}}}


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
    with pytest.raises(ValueError, match="two beat entries are named 'nightly'"):
        build_beat_entries(first, second)


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
    with pytest.raises(ValueError, match=f"outside {TASKS_PACKAGE}"):
        build_beat_entries([PeriodicTask("foreign", task, 60.0)])


def test_the_apps_beat_schedule_names_registered_tasks(producer_app: WorkerApp) -> None:
    producer_app.loader.import_default_modules()
    schedule = producer_app.conf.beat_schedule

    assert {"cleanup-temp-files", "cleanup-old-logs"} <= set(schedule)
    for name, entry in schedule.items():
        assert entry["task"] in producer_app.tasks, f"{name} names an unregistered task"


# -- the enhanced scheduler's format ------------------------------------------------------------


def test_a_crontab_entry_becomes_its_cron_text_in_the_apps_zone() -> None:
    entry = PeriodicTask("nightly", TEMP_TASK, crontab(hour=2, minute=0))

    assert entry.as_entry_data() == {
        "cron": "0 2 * * *",
        "timezone": "UTC",
        "task": TEMP_TASK,
        "misfire": "run_once",
    }


@pytest.mark.parametrize(
    ("value", "cron"),
    [
        (crontab(minute="*/10"), "*/10 * * * *"),
        (crontab(minute=30, hour="9-17", day_of_week="mon-fri"), "30 9-17 * * mon-fri"),
        (crontab(minute=0, hour=6, day_of_month="1", month_of_year="*/3"), "0 6 1 */3 *"),
    ],
)
def test_each_crontab_field_is_carried_in_crons_order(value: crontab, cron: str) -> None:
    data = schedule_data(value)

    assert data == {"cron": cron}
    assert entry_from_data("e", {"task": TEMP_TASK, **data}).cron is not None


def test_a_crontab_with_fields_given_as_lists_becomes_a_cron_that_parses() -> None:
    data = schedule_data(crontab(minute=[0, 30], hour={8, 20}))

    entry = entry_from_data("twice", {"task": TEMP_TASK, **data})

    assert entry.cron is not None
    assert (entry.cron.minutes, entry.cron.hours) == ((0, 30), (8, 20))


@pytest.mark.parametrize(
    "value",
    [90, 90.0, timedelta(seconds=90), schedule(run_every=timedelta(seconds=90))],
    ids=["int", "float", "timedelta", "celery-schedule"],
)
def test_an_interval_in_any_form_becomes_seconds(value: Any) -> None:
    data = PeriodicTask("often", TEMP_TASK, value).as_entry_data()

    assert data["interval"] == 90.0
    assert isinstance(data["interval"], float)
    assert "cron" not in data


class _EveryOtherRun(schedule):  # type: ignore[misc]  # celery's schedule is untyped
    """A custom schedule class: its timing is its own code, which the format cannot hold."""


@pytest.mark.parametrize(
    "value",
    [
        solar.__new__(solar),  # built without ephem, which this project does not install
        _EveryOtherRun(run_every=60),
        True,
        "0 2 * * *",
    ],
    ids=["solar", "schedule-subclass", "bool", "text"],
)
def test_a_schedule_the_enhanced_scheduler_cannot_run_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"schedule is not supported \(use crontab"):
        schedule_data(value)


def test_queue_priority_and_expiry_become_fields_of_their_own() -> None:
    entry = PeriodicTask(
        "nightly",
        TEMP_TASK,
        crontab(hour=2, minute=0),
        options={"queue": c.FILE_QUEUE, "priority": 3, "expires": 600},
    )

    data = entry.as_entry_data()

    assert (data["queue"], data["priority"], data["expires"]) == (c.FILE_QUEUE, 3, 600)
    assert "options" not in data


def test_an_option_set_to_none_is_left_out() -> None:
    assert options_data({"priority": None, "queue": c.FILE_QUEUE}) == {"queue": c.FILE_QUEUE}


@pytest.mark.parametrize("option", ["countdown", "routing_key", "exchange"])
def test_an_option_the_enhanced_scheduler_would_drop_is_refused(option: str) -> None:
    entry = PeriodicTask("nightly", TEMP_TASK, 60.0, options={option: "x", "priority": 3})

    with pytest.raises(ValueError, match=f"options {option} are not supported"):
        entry.as_entry_data()


def test_the_patterns_are_carried_and_read_back_by_the_entry_parser() -> None:
    entry = PeriodicTask(
        "office-sync",
        SYNC_TASK,
        crontab(minute=0, hour="9-16", day_of_week="mon-fri"),
        kwargs={"full": False},
        args=("calendar",),
        options={"priority": 7},
        timezone="Europe/Berlin",
        jitter=60.0,
        window="mon-fri 09:00-17:00 Europe/Berlin",
        no_overlap=True,
        max_queue_depth=100,
        misfire="skip",
        misfire_grace=120.0,
    )

    checked = entry_from_data(entry.name, entry.as_entry_data(app_timezone="UTC"))

    assert checked.cron is not None and checked.window is not None
    assert (checked.cron.text, checked.timezone) == ("0 9-16 * * mon-fri", "Europe/Berlin")
    assert (checked.args, checked.kwargs) == (("calendar",), {"full": False})
    assert (checked.priority, checked.jitter, checked.window.text) == (
        7,
        60.0,
        "mon-fri 09:00-17:00 Europe/Berlin",
    )
    assert (checked.no_overlap, checked.max_queue_depth) == (True, 100)
    assert (checked.misfire, checked.misfire_grace) == ("skip", 120.0)


def test_an_entry_without_a_zone_takes_the_apps() -> None:
    entry = PeriodicTask("nightly", TEMP_TASK, crontab(hour=2, minute=0))

    assert entry.as_entry_data(app_timezone="Asia/Tokyo")["timezone"] == "Asia/Tokyo"


def test_defaults_stay_out_of_the_data_so_the_parser_supplies_them() -> None:
    data = PeriodicTask("plain", TEMP_TASK, 60.0).as_entry_data()

    assert set(data) == {"interval", "timezone", "task", "misfire"}


def test_workflow_entries_are_beat_entries_but_not_celery_schedule_entries() -> None:
    group = [
        PeriodicTask("nightly", TEMP_TASK, crontab(hour=2, minute=0)),
        PeriodicTask("digest", "", crontab(hour=6, minute=0), workflow=WORKFLOW),
    ]

    entries = build_beat_entries(group, timezone="Europe/Berlin")
    celery_schedule = build_beat_schedule(group)

    assert set(entries) == {"nightly", "digest"}
    assert set(celery_schedule) == {"nightly"}
    assert entries["digest"]["workflow"] == WORKFLOW
    assert "task" not in entries["digest"]
    assert entries["digest"]["timezone"] == "Europe/Berlin"
    digest = entry_from_data("digest", entries["digest"])
    assert (digest.task, digest.workflow) == ("", WORKFLOW)


def test_the_workflow_data_is_a_copy_the_caller_may_change() -> None:
    entry = PeriodicTask("digest", "", 3600.0, workflow={"name": "d", "tasks": {}})

    entry.as_entry_data()["workflow"]["name"] = "changed"

    assert entry.workflow == {"name": "d", "tasks": {}}
