"""``sync_calendar_events`` run in this process as a worker runs it: every feed in its own
transactions, feed errors reported (result, log, metric) while the others sync, a retry only
when nothing synced and a retry may help, and a clear answer when nothing is configured."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from personal_assistant.workers.app import WorkerApp
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.errors import PermanentError, TransientError
from personal_assistant.workers.metrics.domain_counters import read_domain_counts
from personal_assistant.workers.store.calendar_models import CalendarEvent, CalendarFeed
from personal_assistant.workers.store.engine import dispose_all, session_scope
from personal_assistant.workers.tasks.sync_tasks import sync_calendar_events
from tests.support.ics_feeds import (
    FIRST_FEED,
    MALFORMED_FEED,
    IcsFeedServer,
    calendar,
    ics_feed_server,
    vevent,
)

TOKEN = "tok-5b8e"  # noqa: S105 - a made-up feed token, the string to look for in logs


@pytest.fixture
def feeds() -> Iterator[IcsFeedServer]:
    with ics_feed_server() as server:
        yield server


class Runner:
    """Runs the task in an app of the given settings (closed, and its counts flushed, after)."""

    def __init__(self, redis_url: str, sqlite_store: str) -> None:
        self.redis_url = redis_url
        self.store = sqlite_store
        self.apps: list[WorkerApp] = []

    def __call__(self, configured: dict[str, str], **kwargs: Any) -> dict[str, Any]:
        settings = load_settings(
            celery_broker_url=self.redis_url,
            celery_result_backend=self.redis_url,
            database_url=self.store,
            calendar_feeds=configured,
            calendar_timeout=2.0,
        )
        app = WorkerApp(settings, set_as_current=False)
        self.apps.append(app)
        result: dict[str, Any] = app.tasks[sync_calendar_events.name](**kwargs)
        return result

    def close(self) -> None:
        for app in self.apps:
            app.close()


@pytest.fixture
def run(clean_env: pytest.MonkeyPatch, redis_url: str, sqlite_store: str) -> Iterator[Runner]:
    runner = Runner(redis_url, sqlite_store)
    yield runner
    runner.close()


def event_count(sqlite_store: str, feed: str) -> int:
    with session_scope(sqlite_store) as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(CalendarEvent)
                .join(CalendarFeed)
                .where(CalendarFeed.name == feed)
            )
            or 0
        )


def counts(run: Runner, client: redis.Redis) -> dict[tuple[str, ...], int]:
    run.close()  # flushes the counts to Redis
    return read_domain_counts(client)


def test_with_no_feeds_configured_the_task_succeeds_and_says_so(
    clean_env: pytest.MonkeyPatch, redis_url: str, tmp_path: Path
) -> None:
    # Not even a migrated store is needed when there is nothing to sync.
    runner = Runner(redis_url, f"sqlite:///{tmp_path}/never-created.db")
    try:
        result = runner({})
    finally:
        runner.close()

    assert result == {
        "feeds": {},
        "not_configured": ["CALENDAR_FEEDS"],
        "message": "no CALENDAR_FEEDS configured",
    }
    assert not (tmp_path / "never-created.db").exists()


def test_naming_a_feed_when_none_is_configured_fails_clearly(run: Runner) -> None:
    with pytest.raises(PermanentError, match=r"unknown feed.*'work'.*no CALENDAR_FEEDS configured"):
        run({}, feeds=["work"])


def test_naming_an_unknown_feed_fails_and_lists_the_configured_ones(
    run: Runner, feeds: IcsFeedServer
) -> None:
    configured = {"work": feeds.url("/w.ics"), "home": feeds.url("/h.ics")}

    with pytest.raises(
        PermanentError, match=r"unknown feed\(s\) 'gym': CALENDAR_FEEDS has home, work"
    ):
        run(configured, feeds=["gym"])

    assert feeds.requests == []


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("work", "feeds must be a list of feed names, got str"),
        (["work", 3], "got list with a non-text item"),
        ([], "feeds is empty"),
    ],
)
def test_a_feeds_argument_that_is_not_a_list_of_names_is_refused(
    run: Runner, feeds: IcsFeedServer, argument: object, message: str
) -> None:
    with pytest.raises(PermanentError, match=message):
        run({"work": feeds.url("/w.ics")}, feeds=argument)


def test_only_the_named_feeds_are_synced(
    run: Runner, feeds: IcsFeedServer, sqlite_store: str
) -> None:
    feeds.feed("/w.ics", FIRST_FEED)
    feeds.feed("/h.ics", FIRST_FEED)

    result = run({"work": feeds.url("/w.ics"), "home": feeds.url("/h.ics")}, feeds=["home"])

    assert list(result["feeds"]) == ["home"]
    assert (event_count(sqlite_store, "home"), event_count(sqlite_store, "work")) == (4, 0)


def test_a_malformed_feed_is_reported_while_the_other_feeds_sync(
    run: Runner,
    feeds: IcsFeedServer,
    sqlite_store: str,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    feeds.feed(f"/{TOKEN}/good.ics", FIRST_FEED, etag='"g1"')
    feeds.feed(f"/{TOKEN}/bad.ics", MALFORMED_FEED)
    configured = {"good": feeds.url(f"/{TOKEN}/good.ics"), "bad": feeds.url(f"/{TOKEN}/bad.ics")}

    with caplog.at_level("INFO"):
        result = run(configured)

    assert result["not_configured"] == []
    assert result["feeds"]["good"] == {
        "status": "ok",
        "upserted": 4,
        "removed": 0,
        "unchanged": 0,
        "reason": None,
        "error": None,
    }
    bad = result["feeds"]["bad"]
    assert (bad["status"], bad["reason"]) == ("error", "malformed")
    assert bad["error"].startswith("not an iCalendar feed")
    assert event_count(sqlite_store, "good") == 4
    assert counts(run, redis_client) == {
        ("pa_calendar_events_upserted", "good"): 4,
        ("pa_calendar_sync_errors", "bad", "malformed"): 1,
    }
    feed_lines = [r.getMessage() for r in caplog.records if "calendar feed" in r.getMessage()]
    assert feed_lines[0] == "calendar feed good: synced, 4 upserted, 0 removed, 0 unchanged"
    assert feed_lines[1].startswith(
        "calendar feed bad: malformed error, previous events kept: not an iCalendar feed: "
    )
    assert len(feed_lines) == 2
    assert TOKEN not in caplog.text


def test_a_second_run_of_an_unchanged_feed_is_not_modified_and_writes_nothing(
    run: Runner, feeds: IcsFeedServer, redis_client: redis.Redis
) -> None:
    feeds.feed("/w.ics", FIRST_FEED, etag='"w1"')
    run({"work": feeds.url("/w.ics")})

    result = run({"work": feeds.url("/w.ics")})

    assert result["feeds"]["work"]["status"] == "not_modified"
    assert feeds.seen("/w.ics")[1].headers["if-none-match"] == '"w1"'
    assert counts(run, redis_client) == {("pa_calendar_events_upserted", "work"): 4}


def test_when_every_feed_fails_and_one_may_recover_the_run_fails_to_be_retried(
    run: Runner, feeds: IcsFeedServer, sqlite_store: str
) -> None:
    feeds.status("/w.ics", 503)
    feeds.feed("/h.ics", MALFORMED_FEED)

    with pytest.raises(TransientError, match="no calendar feed synced") as caught:
        run({"work": feeds.url("/w.ics"), "home": feeds.url("/h.ics")})

    assert "work: http://127.0.0.1" in str(caught.value)
    with session_scope(sqlite_store) as session:
        rows = {f.name: f for f in session.scalars(select(CalendarFeed))}
    assert rows["work"].last_error == f"http: {feeds.base_url}/**** answered HTTP 503"
    assert rows["home"].last_status == "error"


def test_when_every_feed_fails_for_lasting_reasons_the_run_succeeds_and_reports_them(
    run: Runner, feeds: IcsFeedServer
) -> None:
    feeds.status("/w.ics", 404)
    feeds.feed("/h.ics", MALFORMED_FEED)

    result = run({"work": feeds.url("/w.ics"), "home": feeds.url("/h.ics")})

    reasons = {name: feed["reason"] for name, feed in result["feeds"].items()}
    assert reasons == {"work": "http", "home": "malformed"}


def test_a_store_that_is_not_migrated_fails_clearly_before_any_fetch(
    clean_env: pytest.MonkeyPatch, redis_url: str, tmp_path: Path, feeds: IcsFeedServer
) -> None:
    runner = Runner(redis_url, f"sqlite:///{tmp_path}/empty.db")
    try:
        with pytest.raises(PermanentError, match=r"is not migrated: run `celery .* db upgrade`"):
            runner({"work": feeds.url("/w.ics")})
    finally:
        runner.close()
        dispose_all()

    assert feeds.requests == []


def test_events_without_a_time_zone_are_stored_as_utc_and_the_log_says_so(
    run: Runner, feeds: IcsFeedServer, sqlite_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    feeds.feed("/w.ics", calendar(vevent("a@x", "DTSTART:20260301T120000")))

    with caplog.at_level("INFO"):
        run({"work": feeds.url("/w.ics")})

    with session_scope(sqlite_store) as session:
        starts = session.scalars(select(CalendarEvent.starts_at)).all()
    assert starts == [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    assert "1 event(s) without a time zone taken as UTC" in caplog.text
