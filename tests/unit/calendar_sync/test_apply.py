"""Parsed events into the store, on SQLite and on PostgreSQL: upserts by (UID, RECURRENCE-ID),
removal of what the feed dropped, nothing written on a re-run, failures that keep the events."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from personal_assistant.workers.calendar_sync.apply import (
    SyncCounts,
    apply_feed,
    feed_validators,
    record_failure,
    record_not_modified,
)
from personal_assistant.workers.calendar_sync.parse import FeedEvent, parse_feed
from personal_assistant.workers.store.calendar_models import CalendarEvent, CalendarFeed
from personal_assistant.workers.store.engine import session_scope
from tests.support.ics_feeds import FIRST_FEED, SECOND_FEED, calendar, vevent

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def apply(
    url: str,
    events: list[FeedEvent],
    *,
    feed: str = "work",
    etag: str | None = '"v1"',
    now: datetime = T0,
) -> SyncCounts:
    with session_scope(url) as session:
        return apply_feed(session, feed, events, etag=etag, last_modified=None, now=now)


def stored(url: str, feed: str = "work") -> dict[tuple[str, str], CalendarEvent]:
    with session_scope(url) as session:
        rows = session.scalars(
            select(CalendarEvent).join(CalendarFeed).where(CalendarFeed.name == feed)
        )
        return {(row.uid, row.recurrence_id): row for row in rows}


def feed_row(url: str, feed: str = "work") -> CalendarFeed:
    with session_scope(url) as session:
        return session.scalars(select(CalendarFeed).where(CalendarFeed.name == feed)).one()


def test_a_first_sync_stores_every_event_and_the_feeds_validators(any_store: str) -> None:
    counts = apply(any_store, parse_feed(FIRST_FEED))

    assert counts == SyncCounts(upserted=4, removed=0, unchanged=0)
    events = stored(any_store)
    assert set(events) == {
        ("weekly@example.com", ""),
        ("weekly@example.com", "2026-01-12T08:00:00Z"),
        ("dentist@example.com", ""),
        ("holiday@example.com", ""),
    }
    dentist = events[("dentist@example.com", "")]
    assert (dentist.summary, dentist.location) == ("Dentist", "Main St 1")
    assert dentist.starts_at == datetime(2026, 1, 7, 14, 0, tzinfo=UTC)
    assert events[("holiday@example.com", "")].all_day is True
    assert events[("weekly@example.com", "")].rrule == "FREQ=WEEKLY;COUNT=10"
    feed = feed_row(any_store)
    assert (feed.etag, feed.last_status, feed.event_count) == ('"v1"', "ok", 4)
    assert feed.last_synced_at == feed.last_attempt_at == T0


def test_a_re_run_with_the_same_events_writes_no_event(any_store: str) -> None:
    apply(any_store, parse_feed(FIRST_FEED), now=T0)

    counts = apply(any_store, parse_feed(FIRST_FEED), now=T1)

    assert counts == SyncCounts(upserted=0, removed=0, unchanged=4)
    assert {row.updated_at for row in stored(any_store).values()} == {T0}
    assert feed_row(any_store).last_synced_at == T1


def test_a_changed_feed_updates_changed_events_and_removes_dropped_ones(any_store: str) -> None:
    apply(any_store, parse_feed(FIRST_FEED), now=T0)
    before = stored(any_store)

    counts = apply(any_store, parse_feed(SECOND_FEED), now=T1)

    assert counts == SyncCounts(upserted=1, removed=1, unchanged=2)
    after = stored(any_store)
    assert ("dentist@example.com", "") not in after
    holiday = after[("holiday@example.com", "")]
    assert (holiday.summary, holiday.updated_at) == ("Epiphany", T1)
    # Updated in place: the row keeps its id.
    assert holiday.id == before[("holiday@example.com", "")].id
    assert after[("weekly@example.com", "")].updated_at == T0
    assert feed_row(any_store).event_count == 3


def test_an_empty_feed_removes_every_event_of_that_feed_only(any_store: str) -> None:
    apply(any_store, parse_feed(FIRST_FEED), feed="work")
    apply(any_store, parse_feed(FIRST_FEED), feed="home")

    counts = apply(any_store, [], feed="work")

    assert counts == SyncCounts(upserted=0, removed=4, unchanged=0)
    assert stored(any_store, "work") == {}
    assert len(stored(any_store, "home")) == 4


def test_a_failure_keeps_the_events_and_validators_and_records_the_error(any_store: str) -> None:
    apply(any_store, parse_feed(FIRST_FEED), now=T0)

    with session_scope(any_store) as session:
        record_failure(session, "work", "malformed", "not an iCalendar feed: 'x'", T1)

    feed = feed_row(any_store)
    assert (feed.last_status, feed.last_error) == ("error", "malformed: not an iCalendar feed: 'x'")
    assert (feed.last_attempt_at, feed.last_synced_at, feed.etag) == (T1, T0, '"v1"')
    assert len(stored(any_store)) == 4


def test_a_failure_of_a_feed_never_synced_creates_its_row_with_the_error(any_store: str) -> None:
    with session_scope(any_store) as session:
        record_failure(session, "new", "timeout", "no reply", T0)

    feed = feed_row(any_store, "new")
    assert (feed.last_status, feed.last_synced_at, feed.event_count) == ("error", None, 0)


def test_not_modified_keeps_the_events_and_stores_renewed_validators(any_store: str) -> None:
    apply(any_store, parse_feed(FIRST_FEED), now=T0)

    with session_scope(any_store) as session:
        record_not_modified(session, "work", etag='"v1b"', last_modified=None, now=T1)

    feed = feed_row(any_store)
    assert (feed.last_status, feed.etag, feed.last_synced_at) == ("not_modified", '"v1b"', T1)
    assert len(stored(any_store)) == 4


def test_the_validators_are_those_of_the_last_good_sync(any_store: str) -> None:
    with session_scope(any_store) as session:
        assert feed_validators(session, "work") == (None, None)
    apply(any_store, parse_feed(FIRST_FEED), etag='"v7"')

    with session_scope(any_store) as session:
        assert feed_validators(session, "work") == ('"v7"', None)


def test_two_syncs_of_a_feed_at_once_take_turns(any_store: str) -> None:
    events = parse_feed(
        calendar(*(vevent(f"e{i}@x", "DTSTART:20260301T120000Z") for i in range(50)))
    )
    apply(any_store, [])  # the feed's row exists: only its lock can order the two syncs
    start = threading.Barrier(2)
    results: list[SyncCounts] = []
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            start.wait(timeout=10)
            results.append(apply(any_store, events))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sync) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    # One inserted everything; the other, after it, found everything in place.
    assert sorted(r.upserted for r in results) == [0, 50]
    assert len(stored(any_store)) == 50
