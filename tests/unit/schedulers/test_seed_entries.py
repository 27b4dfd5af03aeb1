"""The seed's five periodic tasks, as the built app's ``pa_beat_entries`` carry them to the
enhanced scheduler: each at the seed's schedule and priority, each a valid entry, and the
whole declared catalogue free of problems."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.schedulers.beat_catalogue import known_task_names, load_catalogue
from personal_assistant.workers.schedulers.beat_entry import check_against, entry_from_data
from tests.support.apps import MakeApp

pytestmark = pytest.mark.usefixtures("clean_env")

# name -> (task module.function, cron, priority): the seed's table.
SEED = {
    "process-due-ai-tasks": ("ai_tasks.process_due_ai_tasks", "*/10 * * * *", 10),
    "process-email-queue": ("email_tasks.process_email_queue", "*/5 * * * *", 5),
    "cleanup-temp-files": ("file_tasks.cleanup_temp_files", "0 2 * * *", 3),
    "sync-calendar-events": ("sync_tasks.sync_calendar_events", "0 * * * *", 7),
    "cleanup-old-logs": ("maintenance_tasks.cleanup_old_logs", "0 3 * * *", 1),
}


@pytest.mark.parametrize("name", sorted(SEED))
def test_the_apps_beat_entries_hold_the_seeds_entry_at_its_schedule_and_priority(
    make_app: MakeApp, redis_url: str, name: str
) -> None:
    app = make_app(celery_broker_url=redis_url)
    task, cron, priority = SEED[name]

    data = app.conf.pa_beat_entries[name]
    entry = entry_from_data(name, data)

    assert entry.task == f"{c.TASKS_PACKAGE}.{task}"
    assert entry.cron is not None
    assert (entry.cron.text, entry.timezone, entry.priority) == (cron, "UTC", priority)
    assert entry.enabled
    check_against(entry, known_tasks=known_task_names(app), known_queues=set(c.QUEUES))


def test_the_apps_beat_entries_are_the_seeds_and_the_timeout_sweep(
    make_app: MakeApp, redis_url: str
) -> None:
    app = make_app(celery_broker_url=redis_url)

    assert set(app.conf.pa_beat_entries) == {*SEED, "sweep-workflow-timeouts"}
    assert set(app.conf.beat_schedule) == set(app.conf.pa_beat_entries)


def test_alerting_adds_its_evaluation_to_both_schedules(make_app: MakeApp, redis_url: str) -> None:
    app = make_app(celery_broker_url=redis_url, alerting_enabled=True, metrics_enabled=True)

    assert "evaluate-alerts" in app.conf.pa_beat_entries
    assert "evaluate-alerts" in app.conf.beat_schedule


def test_every_declared_entry_of_the_app_checks_without_a_problem(
    make_app: MakeApp, redis_url: str
) -> None:
    app = make_app(celery_broker_url=redis_url)
    now = datetime(2027, 1, 4, 12, tzinfo=UTC).timestamp()

    catalogue = load_catalogue(app, None, now)

    assert catalogue.problems == {}
    assert set(catalogue.enabled()) == {*SEED, "sweep-workflow-timeouts"}
