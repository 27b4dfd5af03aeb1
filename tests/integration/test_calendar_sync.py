"""A real sync worker syncs iCalendar feeds served on loopback into a SQLite store: the first
run stores the events, an unchanged feed answers 304 and nothing is written, a changed feed
updates and removes events, and a malformed feed keeps them and is counted as an error."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.metrics.domain_counters import read_domain_counts
from personal_assistant.workers.store.calendar_models import CalendarEvent, CalendarFeed
from personal_assistant.workers.store.engine import dispose_all, session_scope
from personal_assistant.workers.store.migrate import upgrade
from tests.support.ics_feeds import (
    FIRST_FEED,
    MALFORMED_FEED,
    SECOND_FEED,
    calendar,
    ics_feed_server,
    vevent,
)
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

SYNC_TASK = f"{c.TASKS_PACKAGE}.sync_tasks.sync_calendar_events"
TOKEN = "cal-token-77d1"  # noqa: S105 - a made-up feed token, the string to look for in logs
HOME_FEED = calendar(vevent("gym@example.com", "SUMMARY:Gym", "DTSTART:20260108T180000Z"))


def sync(producer_app: WorkerApp) -> dict[str, Any]:
    result: dict[str, Any] = producer_app.send_task(SYNC_TASK, queue=c.SYNC_QUEUE).get(timeout=30)
    feeds: dict[str, Any] = result["feeds"]
    return feeds


def work_events(store: str) -> dict[tuple[str, str], tuple[str, datetime]]:
    with session_scope(store) as session:
        rows = session.scalars(
            select(CalendarEvent).join(CalendarFeed).where(CalendarFeed.name == "work")
        )
        return {(r.uid, r.recurrence_id): (r.summary, r.updated_at) for r in rows}


def test_a_sync_worker_keeps_the_store_equal_to_the_feeds_and_survives_a_malformed_one(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path}/store.db"
    upgrade(store)
    with ics_feed_server() as feeds:
        work_path = f"/{TOKEN}/work.ics"
        feeds.feed(work_path, FIRST_FEED, etag='"v1"')
        feeds.feed("/home.ics", HOME_FEED, etag='"h1"')
        worker = start_worker(
            [c.SYNC_QUEUE],
            env={
                "CALENDAR_FEEDS": f"work={feeds.url(work_path)},home={feeds.url('/home.ics')}",
                "DATABASE_URL": store,
            },
        )

        first = sync(producer_app)
        assert (first["work"]["status"], first["work"]["upserted"]) == ("ok", 4)
        assert (first["home"]["status"], first["home"]["upserted"]) == ("ok", 1)
        stored = work_events(store)
        assert len(stored) == 4
        assert ("weekly@example.com", "2026-01-12T08:00:00Z") in stored

        unchanged = sync(producer_app)
        assert unchanged["work"]["status"] == "not_modified"
        assert feeds.seen(work_path)[1].headers["if-none-match"] == '"v1"'
        assert work_events(store) == stored

        feeds.feed(work_path, SECOND_FEED, etag='"v2"')
        changed = sync(producer_app)
        assert {k: changed["work"][k] for k in ("upserted", "removed", "unchanged")} == {
            "upserted": 1,
            "removed": 1,
            "unchanged": 2,
        }
        after_change = work_events(store)
        assert ("dentist@example.com", "") not in after_change
        assert after_change[("holiday@example.com", "")][0] == "Epiphany"

        feeds.feed(work_path, MALFORMED_FEED, etag='"v3"')
        broken = sync(producer_app)
        assert (broken["work"]["status"], broken["work"]["reason"]) == ("error", "malformed")
        assert broken["home"]["status"] == "not_modified"
        assert work_events(store) == after_change

    def error_counted() -> bool:
        counts = read_domain_counts(redis_client)
        return counts.get(("pa_calendar_sync_errors", "work", "malformed")) == 1

    wait_for(error_counted, timeout=10)
    counts = read_domain_counts(redis_client)
    assert counts[("pa_calendar_events_upserted", "work")] == 5
    assert counts[("pa_calendar_events_removed", "work")] == 1
    log = worker.log()
    assert "calendar feed work: malformed error, previous events kept" in log
    assert TOKEN not in log
    dispose_all()
