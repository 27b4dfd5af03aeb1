"""The backend's API for AI jobs (schedulers/ai_scheduler.py): create or change a job by name,
read its status, disable and delete it; bad arguments and an unmigrated store are refused
with a clear error before anything is stored."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from celery.schedules import crontab

from personal_assistant.workers.ai.jobs import JobError
from personal_assistant.workers.ai.schedule import ScheduleError
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.schedulers.ai_scheduler import (
    AI_SCHEDULE,
    ai_job_status,
    delete_ai_job,
    disable_ai_job,
    schedule_ai_job,
)


def test_a_job_is_created_then_changed_by_name(
    sqlite_store: str, clean_env: pytest.MonkeyPatch
) -> None:
    # settings omitted: the environment's DATABASE_URL, as in the backend.
    clean_env.setenv("DATABASE_URL", sqlite_store)

    job_id = schedule_ai_job("triage", "Sort the inbox.", interval=timedelta(hours=2))
    same_id = schedule_ai_job(
        "triage", "Sort the inbox.", cron="0 8 * * mon-fri", timezone="Europe/Berlin"
    )

    assert same_id == job_id
    found = ai_job_status("triage")
    assert found is not None
    assert (found["id"], found["enabled"], found["run_count"]) == (job_id, True, 0)
    assert found["schedule"] == "cron '0 8 * * mon-fri' in Europe/Berlin"
    assert ai_job_status("no-such-job") is None


def test_a_job_is_disabled_then_deleted(sqlite_store: str, clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(database_url=sqlite_store)
    schedule_ai_job("brief", "Brief me.", cron="@daily", settings=settings)

    assert disable_ai_job("brief", settings=settings) is True
    found = ai_job_status("brief", settings=settings)
    assert found is not None and found["enabled"] is False
    assert delete_ai_job("brief", settings=settings) is True
    assert delete_ai_job("brief", settings=settings) is False
    assert disable_ai_job("brief", settings=settings) is False
    assert ai_job_status("brief", settings=settings) is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ScheduleError, "exactly one of cron and interval"),
        ({"interval": timedelta(seconds=90.5)}, ScheduleError, "whole seconds"),
        ({"interval": 30}, ScheduleError, "between 60 s"),
        ({"cron": "0 9 * *"}, ScheduleError, "needs 5"),
        ({"cron": "0 9 * * *", "timezone": "CET+1"}, ScheduleError, "unknown time zone"),
        ({"cron": "0 9 * * *", "model": "a b"}, JobError, "model must be a name"),
    ],
)
def test_bad_arguments_are_refused_before_the_store_is_touched(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    kwargs: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    never_created = tmp_path / "none.db"
    settings = load_settings(database_url=f"sqlite:///{never_created}")

    with pytest.raises(error, match=message):
        schedule_ai_job("job", "Prompt.", settings=settings, **kwargs)  # type: ignore[arg-type]

    assert not never_created.exists()


def test_an_unmigrated_store_is_refused_saying_how_to_migrate(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}")

    with pytest.raises(RuntimeError, match=r"no AI tables: run `celery .* db upgrade`"):
        schedule_ai_job("job", "Prompt.", cron="@hourly", settings=settings)


def test_the_beat_entry_looks_for_due_jobs_every_ten_minutes() -> None:
    (entry,) = AI_SCHEDULE
    assert entry.task == "personal_assistant.workers.tasks.ai_tasks.process_due_ai_tasks"
    assert isinstance(entry.schedule, crontab)
    assert entry.schedule.minute == set(range(0, 60, 10))
