"""An iCalendar body becomes one event per (UID, RECURRENCE-ID) with times in UTC; a malformed
body is refused with an error that says where."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from personal_assistant.workers.calendar_sync.errors import FeedMalformed
from personal_assistant.workers.calendar_sync.parse import FeedEvent, parse_feed
from tests.support.ics_feeds import (
    BERLIN,
    CALENDAR_HEAD,
    CALENDAR_TAIL,
    FIRST_FEED,
    calendar,
    vevent,
)


def by_key(events: list[FeedEvent]) -> dict[tuple[str, str], FeedEvent]:
    return {event.key: event for event in events}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def only(body: bytes) -> FeedEvent:
    (event,) = parse_feed(body)
    return event


def test_a_recurring_event_with_a_moved_occurrence_is_a_master_and_an_override() -> None:
    events = by_key(parse_feed(FIRST_FEED))

    master = events[("weekly@example.com", "")]
    moved = events[("weekly@example.com", "2026-01-12T08:00:00Z")]
    assert master.rrule == "FREQ=WEEKLY;COUNT=10"
    # 09:00 in Berlin in January is 08:00 UTC.
    assert (master.starts_at, master.ends_at) == (utc(2026, 1, 5, 8, 0), utc(2026, 1, 5, 8, 30))
    assert moved.rrule is None
    assert moved.summary == "Weekly sync (moved)"
    assert (moved.starts_at, moved.sequence) == (utc(2026, 1, 12, 10, 0), 1)
    assert len(events) == 4


def test_an_all_day_event_runs_from_midnight_utc_to_the_next_midnight() -> None:
    holiday = by_key(parse_feed(FIRST_FEED))[("holiday@example.com", "")]

    assert holiday.all_day is True
    assert (holiday.starts_at, holiday.ends_at) == (utc(2026, 1, 6), utc(2026, 1, 7))
    assert holiday.floating is False


def test_a_moved_occurrence_of_an_all_day_series_is_keyed_by_its_date() -> None:
    body = calendar(
        vevent("bin@x", "DTSTART;VALUE=DATE:20260105", "RRULE:FREQ=WEEKLY"),
        vevent("bin@x", "RECURRENCE-ID;VALUE=DATE:20260112", "DTSTART;VALUE=DATE:20260113"),
    )

    keys = {event.key for event in parse_feed(body)}

    assert keys == {("bin@x", ""), ("bin@x", "2026-01-12")}


def test_times_in_a_feed_defined_zone_are_converted_with_its_offsets() -> None:
    zone = (
        "BEGIN:VTIMEZONE\r\nTZID:Head Office\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n"
        "TZOFFSETFROM:+0300\r\nTZOFFSETTO:+0300\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
    )
    body = calendar(zone, vevent("a@x", "DTSTART;TZID=Head Office:20260301T120000"))

    assert only(body).starts_at == utc(2026, 3, 1, 9, 0)


def test_a_windows_zone_name_is_understood() -> None:
    body = calendar(vevent("a@x", "DTSTART;TZID=W. Europe Standard Time:20260701T120000"))

    # Summer time in Berlin: UTC+2.
    assert only(body).starts_at == utc(2026, 7, 1, 10, 0)


@pytest.mark.parametrize(
    "dtstart", ["DTSTART:20260301T120000", "DTSTART;TZID=Nowhere/Special:20260301T120000"]
)
def test_a_time_without_a_known_zone_is_taken_as_utc_and_flagged(dtstart: str) -> None:
    event = only(calendar(vevent("a@x", dtstart)))

    assert event.starts_at == utc(2026, 3, 1, 12, 0)
    assert event.floating is True


def test_a_duration_gives_the_end_and_a_missing_end_is_the_start() -> None:
    events = by_key(
        parse_feed(
            calendar(
                vevent("call@x", "DTSTART:20260301T120000Z", "DURATION:PT45M"),
                vevent("alarm@x", "DTSTART:20260301T120000Z"),
            )
        )
    )

    assert events[("call@x", "")].ends_at == utc(2026, 3, 1, 12, 45)
    assert events[("alarm@x", "")].ends_at == utc(2026, 3, 1, 12, 0)


def test_text_fields_status_and_sequence_are_kept() -> None:
    event = only(
        calendar(
            vevent(
                "a@x",
                "DTSTART:20260301T120000Z",
                "SUMMARY:Review\\, part 2",
                "DESCRIPTION:Line one\\nLine two",
                "LOCATION:Room 4",
                "STATUS:cancelled",
                "SEQUENCE:3",
            )
        )
    )

    assert (event.summary, event.description, event.location) == (
        "Review, part 2",
        "Line one\nLine two",
        "Room 4",
    )
    assert (event.status, event.sequence) == ("CANCELLED", 3)


def test_the_content_hash_ignores_property_order_and_line_folding_but_not_content() -> None:
    plain = calendar(vevent("a@x", "SUMMARY:Planning", "DTSTART:20260301T120000Z"))
    folded = calendar(vevent("a@x", "DTSTART:20260301T120000Z", "SUMMARY:Plan\r\n ning"))
    renamed = calendar(vevent("a@x", "DTSTART:20260301T120000Z", "SUMMARY:Planning!"))

    assert only(plain).content_hash == only(folded).content_hash
    assert only(plain).content_hash != only(renamed).content_hash
    assert len(only(plain).content_hash) == 64


def test_a_repeated_identical_event_is_one_event() -> None:
    event = vevent("a@x", "DTSTART:20260301T120000Z")

    assert len(parse_feed(calendar(event, event))) == 1


def test_of_two_revisions_of_an_event_the_higher_sequence_wins() -> None:
    old = vevent("a@x", "DTSTART:20260301T120000Z", "SUMMARY:Old", "SEQUENCE:2")
    new = vevent("a@x", "DTSTART:20260301T120000Z", "SUMMARY:New", "SEQUENCE:3")

    assert only(calendar(new, old)).summary == "New"
    assert only(calendar(old, new)).summary == "New"


def test_a_broken_property_the_store_does_not_read_is_ignored() -> None:
    event = only(calendar(vevent("a@x", "DTSTART:20260301T120000Z", "CREATED:yesterday")))

    assert event.uid == "a@x"


def vevent_without_uid(*lines: str) -> str:
    return "BEGIN:VEVENT\r\n" + "".join(f"{line}\r\n" for line in lines) + "END:VEVENT\r\n"


GOOD = vevent("good@x", "DTSTART:20260301T120000Z")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the feed is empty"),
        (b"<html><body>Please log in</body></html>", "not an iCalendar feed: .*log in"),
        (
            calendar(GOOD).replace(b"END:VCALENDAR\r\n", b""),
            "not an iCalendar feed: .*no components",
        ),
        (vevent("a@x", "DTSTART:20260301T120000Z").encode(), "the top component is VEVENT"),
        (calendar(GOOD) + calendar(GOOD), "not an iCalendar feed: .*multiple components"),
        (
            calendar(GOOD, vevent_without_uid("DTSTART:20260301T120000Z")),
            r"^VEVENT #2 \(line 8\): no UID$",
        ),
        (calendar(vevent("a@x", "SUMMARY:when?")), r"VEVENT #1 \(line 4\), UID 'a@x': no DTSTART"),
        (
            calendar(vevent("a@x", "DTSTART:next tuesday")),
            r"VEVENT #1 \(line 4\): DTSTART does not parse",
        ),
        (
            calendar(vevent("a@x", "DTSTART:20260301T120000Z", "SEQUENCE:two")),
            "SEQUENCE does not parse",
        ),
        (
            calendar(vevent("a@x", "DTSTART:20260301T120000Z", "RRULE:FREQ=SOMETIMES")),
            "RRULE does not parse",
        ),
        (
            calendar(
                vevent("a@x", "DTSTART:20260301T120000Z", "DTEND:20260301T130000Z", "DURATION:PT1H")
            ),
            "UID 'a@x': 'Only one of DTEND and DURATION",
        ),
        (
            calendar(vevent("a@x", "DTSTART;VALUE=DATE:20260301", "DTEND:20260302T100000Z")),
            "same type",
        ),
        (
            calendar(
                vevent("a@x", "DTSTART:20260301T120000Z", "SUMMARY:One"),
                vevent("a@x", "DTSTART:20260301T120000Z", "SUMMARY:Two"),
            ),
            r"VEVENT #2 \(line 9\), UID 'a@x' repeats VEVENT #1 \(line 4\), UID 'a@x' "
            r"\(RECURRENCE-ID none\) with different content and the same SEQUENCE 0",
        ),
        (calendar(vevent("x" * 600, "DTSTART:20260301T120000Z")), "UID longer than 512"),
    ],
    ids=[
        "empty",
        "html",
        "unterminated",
        "no-vcalendar",
        "two-vcalendars",
        "no-uid",
        "no-dtstart",
        "bad-dtstart",
        "bad-sequence",
        "bad-rrule",
        "dtend-and-duration",
        "date-and-datetime",
        "conflicting-duplicate",
        "huge-uid",
    ],
)
def test_a_malformed_feed_is_refused_with_an_error_naming_the_place(
    body: bytes, message: str
) -> None:
    with pytest.raises(FeedMalformed, match=message) as caught:
        parse_feed(body)

    assert "\n" not in str(caught.value)
    assert caught.value.reason == "malformed"
    assert not caught.value.transient


def test_the_line_numbers_count_a_feeds_time_zones_and_folded_lines() -> None:
    body = (
        (CALENDAR_HEAD + BERLIN + vevent("a@x", "DTSTART:20260301T120000Z", "SUMMARY:lo\r\n ng"))
        + vevent_without_uid("DTSTART:20260301T120000Z")
        + CALENDAR_TAIL
    )

    with pytest.raises(FeedMalformed, match=r"VEVENT #2 \(line 25\): no UID"):
        parse_feed(body.encode())
