"""Active windows (schedulers/beat_window.py): business hours on the zone's wall clock, through
daylight-saving changes; overnight windows belong to the day they open on; day ranges wrap the
week; and every malformed window is refused saying which part is wrong."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from personal_assistant.workers.schedulers.beat_window import WindowError, parse_window

BERLIN = ZoneInfo("Europe/Berlin")
BUSINESS_HOURS = "mon-fri 09:00-17:00 Europe/Berlin"


def berlin(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Berlin, as an aware instant."""
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """An instant given in UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_business_hours_hold_the_opening_minute_and_not_the_closing_one() -> None:
    window = parse_window(BUSINESS_HOURS)

    # Monday 4 January 2027.
    assert window.contains(berlin(2027, 1, 4, 9, 0))
    assert window.contains(berlin(2027, 1, 4, 16, 59))
    assert not window.contains(berlin(2027, 1, 4, 17, 0))
    assert not window.contains(berlin(2027, 1, 4, 8, 59))


def test_business_hours_are_closed_at_the_weekend() -> None:
    window = parse_window(BUSINESS_HOURS)

    assert window.contains(berlin(2027, 1, 8, 12))  # Friday
    assert not window.contains(berlin(2027, 1, 9, 12))  # Saturday
    assert not window.contains(berlin(2027, 1, 10, 12))  # Sunday


def test_an_instant_in_another_zone_is_judged_by_berlins_wall_clock() -> None:
    window = parse_window(BUSINESS_HOURS)

    # 08:30 UTC in January is 09:30 in Berlin; 23:30 UTC on Sunday is 00:30 on Monday there.
    assert window.contains(utc(2027, 1, 4, 8, 30))
    assert not window.contains(utc(2027, 1, 3, 23, 30))
    assert window.contains(datetime(2027, 1, 4, 3, 30, tzinfo=ZoneInfo("America/New_York")))


def test_business_hours_follow_the_wall_clock_into_summer_time() -> None:
    window = parse_window(BUSINESS_HOURS)

    # Monday 29 March 2027, the day after clocks went forward: Berlin is UTC+2.
    assert window.contains(utc(2027, 3, 29, 7, 0))  # 09:00 local
    assert not window.contains(utc(2027, 3, 29, 6, 59))  # 08:59 local
    assert not window.contains(utc(2027, 3, 29, 15, 0))  # 17:00 local
    # The same UTC times a week earlier, still in winter time (UTC+1), are an hour earlier.
    assert not window.contains(utc(2027, 3, 22, 7, 0))  # 08:00 local
    assert window.contains(utc(2027, 3, 22, 15, 0))  # 16:00 local


def test_business_hours_follow_the_wall_clock_back_into_winter_time() -> None:
    window = parse_window(BUSINESS_HOURS)

    # Monday 1 November 2027, the day after clocks went back: Berlin is UTC+1 again.
    assert window.contains(utc(2027, 11, 1, 8, 0))  # 09:00 local
    assert not window.contains(utc(2027, 11, 1, 7, 0))  # 08:00 local
    assert not window.contains(utc(2027, 11, 1, 16, 0))  # 17:00 local
    # A week earlier, in summer time (UTC+2), 07:00 UTC was already 09:00.
    assert window.contains(utc(2027, 10, 25, 7, 0))
    assert not window.contains(utc(2027, 10, 25, 15, 0))


def test_an_overnight_window_belongs_to_the_day_it_opens_on() -> None:
    window = parse_window("fri 22:00-06:00 Europe/Berlin")

    assert window.contains(berlin(2027, 1, 8, 23, 0))  # Friday evening
    assert window.contains(berlin(2027, 1, 9, 1, 0))  # Saturday morning: Friday's night
    assert window.contains(berlin(2027, 1, 9, 5, 59))
    assert not window.contains(berlin(2027, 1, 9, 6, 0))  # the end is outside
    assert not window.contains(berlin(2027, 1, 9, 23, 0))  # Saturday's night: sat not listed
    assert not window.contains(berlin(2027, 1, 8, 1, 0))  # Friday morning: Thursday's night
    assert not window.contains(berlin(2027, 1, 8, 21, 59))


def test_an_overnight_window_on_every_day_is_closed_only_during_the_day() -> None:
    window = parse_window("* 22:00-06:00")

    assert window.contains(utc(2027, 1, 6, 3, 0))
    assert window.contains(utc(2027, 1, 6, 22, 0))
    assert not window.contains(utc(2027, 1, 6, 12, 0))


def test_a_day_range_may_wrap_the_week() -> None:
    window = parse_window("fri-mon 10:00-11:00")

    assert window.days == frozenset({4, 5, 6, 0})
    assert window.contains(utc(2027, 1, 10, 10, 30))  # Sunday
    assert window.contains(utc(2027, 1, 11, 10, 30))  # Monday
    assert not window.contains(utc(2027, 1, 12, 10, 30))  # Tuesday


def test_days_may_be_listed_and_ranged_together() -> None:
    window = parse_window("mon,wed-thu,SAT 10:00-11:00")

    assert window.days == frozenset({0, 2, 3, 5})


def test_the_zone_defaults_to_utc_and_the_text_is_normalised() -> None:
    window = parse_window("  mon-fri   09:00-17:00 ")

    assert window.zone == ZoneInfo("UTC")
    assert window.text == "mon-fri 09:00-17:00"
    assert parse_window(window.text) == window


def test_a_naive_instant_is_refused() -> None:
    window = parse_window(BUSINESS_HOURS)

    with pytest.raises(ValueError, match="timezone-aware"):
        window.contains(datetime(2027, 1, 4, 10, 0))  # naive: the point of the test


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mon-fri 09:00-09:00", r"'mon-fri 09:00-09:00' never opens: it starts when it ends"),
        ("mon-fry 09:00-17:00", r"unknown day 'fry' \(use mon, tue, wed, thu, fri, sat, sun\)"),
        ("mon, 09:00-17:00", r"unknown day ''"),
        ("mon-fri 09:00-24:00", r"'24:00' is not a time HH:MM \(00:00 to 23:59\)"),
        ("mon-fri 9am-5pm", r"'9am' is not a time HH:MM"),
        ("mon-fri 09:60-17:00", r"'09:60' is not a time HH:MM"),
        ("mon-fri 09:00", r"the hours are a span HH:MM-HH:MM"),
        ("mon-fri 09:00-17:00 Mars/Base", r"unknown time zone 'Mars/Base'"),
        ("09:00-17:00", r"write it as DAYS HH:MM-HH:MM \[ZONE\]"),
        ("mon-fri 09:00-17:00 Europe/Berlin extra", r"write it as DAYS HH:MM-HH:MM \[ZONE\]"),
        ("", r"write it as DAYS HH:MM-HH:MM \[ZONE\]"),
    ],
)
def test_a_malformed_window_is_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        parse_window(text)


def test_a_window_that_is_not_text_is_refused_with_an_example() -> None:
    with pytest.raises(WindowError, match=r"a window is text such as 'mon-fri 09:00-17:00"):
        parse_window(["mon-fri", "09:00-17:00"])
