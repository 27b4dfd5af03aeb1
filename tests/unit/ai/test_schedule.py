"""AI job schedules: cron fields and intervals give the right next times, wall-clock times hold
across daylight-saving changes in Berlin and New York, and bad schedules are refused with a
message naming the mistake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from personal_assistant.workers.ai.schedule import (
    MIN_INTERVAL_S,
    ScheduleError,
    parse_cron,
    parse_schedule,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def runs(cron: str, zone: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` runs of ``cron`` in ``zone`` after ``after``, in UTC."""
    schedule = parse_schedule(cron, None, zone)
    times: list[datetime] = []
    for _ in range(count):
        after = schedule.next_after(after)
        times.append(after)
    return times


def local(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") for t in times]


def test_a_daily_berlin_job_runs_at_nine_local_time_across_the_spring_change() -> None:
    times = runs("0 9 * * *", "Europe/Berlin", datetime(2025, 3, 29, 7, 0, tzinfo=UTC), 3)

    assert local(times, BERLIN) == [
        "2025-03-29 09:00 CET",
        "2025-03-30 09:00 CEST",
        "2025-03-31 09:00 CEST",
    ]
    assert [t.hour for t in times] == [8, 7, 7]  # the UTC hour moves, the local one does not


def test_a_daily_berlin_job_runs_at_nine_local_time_across_the_autumn_change() -> None:
    times = runs("0 9 * * *", "Europe/Berlin", datetime(2025, 10, 25, 6, 0, tzinfo=UTC), 3)

    assert local(times, BERLIN) == [
        "2025-10-25 09:00 CEST",
        "2025-10-26 09:00 CET",
        "2025-10-27 09:00 CET",
    ]


def test_a_weekday_new_york_job_keeps_its_local_time_across_both_changes() -> None:
    spring = runs("30 8 * * mon-fri", "America/New_York", datetime(2025, 3, 7, 0, 0, tzinfo=UTC), 2)
    autumn = runs(
        "30 8 * * mon-fri", "America/New_York", datetime(2025, 10, 31, 0, 0, tzinfo=UTC), 2
    )

    # Friday, then Monday after the weekend on which the clocks changed.
    assert local(spring, NEW_YORK) == ["2025-03-07 08:30 EST", "2025-03-10 08:30 EDT"]
    assert local(autumn, NEW_YORK) == ["2025-10-31 08:30 EDT", "2025-11-03 08:30 EST"]


def test_a_time_the_clocks_skip_runs_once_at_the_moment_of_the_jump() -> None:
    times = runs("30 2 * * *", "Europe/Berlin", datetime(2025, 3, 29, 12, 0, tzinfo=UTC), 2)

    assert local(times, BERLIN) == ["2025-03-30 03:00 CEST", "2025-03-31 02:30 CEST"]


def test_a_time_that_occurs_twice_runs_once_at_its_first_occurrence() -> None:
    times = runs("30 2 * * *", "Europe/Berlin", datetime(2025, 10, 25, 12, 0, tzinfo=UTC), 2)

    assert local(times, BERLIN) == ["2025-10-26 02:30 CEST", "2025-10-27 02:30 CET"]


def test_a_new_york_time_the_clocks_skip_runs_at_the_jump() -> None:
    times = runs("15 2 * * *", "America/New_York", datetime(2025, 3, 8, 12, 0, tzinfo=UTC), 2)

    assert local(times, NEW_YORK) == ["2025-03-09 03:00 EDT", "2025-03-10 02:15 EDT"]


def test_half_hourly_runs_over_the_spring_change_only_move_forward_and_never_repeat() -> None:
    times = runs("0,30 * * * *", "Europe/Berlin", datetime(2025, 3, 30, 0, 10, tzinfo=UTC), 4)

    # 02:00 and 02:30 do not exist that night: both collapse into the jump at 03:00.
    assert local(times, BERLIN) == [
        "2025-03-30 01:30 CET",
        "2025-03-30 03:00 CEST",
        "2025-03-30 03:30 CEST",
        "2025-03-30 04:00 CEST",
    ]


def test_the_next_run_is_strictly_after_the_given_instant() -> None:
    at_nine = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)

    assert runs("0 9 * * *", "UTC", at_nine, 1) == [at_nine + timedelta(days=1)]
    assert runs("0 9 * * *", "UTC", at_nine - timedelta(microseconds=1), 1) == [at_nine]


def test_ranges_steps_lists_and_names_combine_as_in_cron() -> None:
    # Monday 2 June 2025, 16:50 UTC: the last two quarter hours of the day's window, then the
    # next weekday morning.
    times = runs("*/15 9-17 * * MON-fri", "UTC", datetime(2025, 6, 2, 17, 20, tzinfo=UTC), 3)

    assert local(times, ZoneInfo("UTC")) == [
        "2025-06-02 17:30 UTC",
        "2025-06-02 17:45 UTC",
        "2025-06-03 09:00 UTC",
    ]
    assert parse_cron("0 0 * * 7").weekdays == parse_cron("0 0 * * sun").weekdays == {0}
    assert parse_cron("5,10-12 * * jan,mar-apr *").months == {1, 3, 4}


def test_with_both_day_fields_restricted_a_day_matching_either_runs() -> None:
    # The 1st of the month or any Monday (1 September 2025 is a Monday).
    times = runs("0 9 1 * mon", "UTC", datetime(2025, 9, 23, tzinfo=UTC), 3)

    assert [t.date().isoformat() for t in times] == ["2025-09-29", "2025-10-01", "2025-10-06"]


def test_the_29th_of_february_runs_in_the_next_leap_year() -> None:
    assert runs("0 0 29 2 *", "UTC", datetime(2025, 3, 1, tzinfo=UTC), 1) == [
        datetime(2028, 2, 29, tzinfo=UTC)
    ]


def test_macros_stand_for_their_expressions() -> None:
    assert parse_cron("@daily").minutes == parse_cron("0 0 * * *").minutes
    assert parse_cron("@weekly").weekdays == {0}
    assert runs("@hourly", "UTC", datetime(2025, 1, 1, 10, 5, tzinfo=UTC), 1) == [
        datetime(2025, 1, 1, 11, 0, tzinfo=UTC)
    ]


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "has 4 fields; it needs 5"),
        ("", "has 0 fields"),
        ("60 * * * *", "minute 60 is outside 0-59"),
        ("0 24 * * *", "hour 24 is outside 0-23"),
        ("0 0 0 * *", "day of month 0 is outside 1-31"),
        ("0 0 * 13 *", "month 13 is outside 1-12"),
        ("0 0 * * 8", "day of week 8 is outside 0-7"),
        ("0 0 * * funday", "day of week 'funday' is not a number"),
        ("*/0 * * * *", "step '0' must be a number >= 1"),
        ("5/10 * * * *", "needs a range or * before '/'"),
        ("10-5 * * * *", "range '10-5' runs backwards"),
        ("1,,2 * * * *", "empty minute"),
        ("0 9 30 2 *", "never runs"),
        ("@reboot", "unknown macro"),
        ("-1 * * * *", "minute '' is not a number"),
    ],
)
def test_a_bad_cron_expression_is_refused_naming_the_mistake(cron: str, message: str) -> None:
    with pytest.raises(ScheduleError, match="cron") as caught:
        parse_schedule(cron, None, "UTC")
    assert message in str(caught.value)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "../../etc/passwd", "", "localtime"])
def test_a_time_zone_that_is_not_an_iana_name_is_refused(zone: str) -> None:
    with pytest.raises(ScheduleError, match="IANA name"):
        parse_schedule("0 9 * * *", None, zone)


def test_an_interval_runs_that_many_seconds_after_the_given_instant() -> None:
    schedule = parse_schedule(None, 3600, "Europe/Berlin")
    # Across the spring change: an interval counts elapsed time, not wall-clock time.
    before_change = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)

    assert schedule.next_after(before_change) == before_change + timedelta(hours=1)
    assert schedule.describe() == "every 3600 s"


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        (MIN_INTERVAL_S - 1, f"between {MIN_INTERVAL_S} s"),
        (0, "between"),
        (-60, "between"),
        (400 * 86400, "(a year)"),
        (True, "whole seconds, got bool"),
        (90.5, "whole seconds, got float"),
    ],
)
def test_a_bad_interval_is_refused(interval: object, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(None, interval, "UTC")  # type: ignore[arg-type]
    assert message in str(caught.value)


@pytest.mark.parametrize(("cron", "interval"), [("0 9 * * *", 3600), (None, None)])
def test_exactly_one_of_cron_and_interval_is_required(
    cron: str | None, interval: int | None
) -> None:
    with pytest.raises(ScheduleError, match="exactly one of cron and interval"):
        parse_schedule(cron, interval, "UTC")


def test_an_interval_job_late_or_down_for_days_runs_once_and_keeps_its_phase() -> None:
    schedule = parse_schedule(None, 3600, "UTC")
    due = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)

    assert schedule.next_run(due, due + timedelta(minutes=7)) == due + timedelta(hours=1)
    three_days_later = due + timedelta(days=3, minutes=5)
    assert schedule.next_run(due, three_days_later) == due + timedelta(days=3, hours=1)


def test_a_cron_job_down_for_days_runs_next_at_its_first_time_after_now() -> None:
    schedule = parse_schedule("0 9 * * *", None, "UTC")
    due = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)

    assert schedule.next_run(due, due + timedelta(days=3, hours=1)) == due + timedelta(days=4)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("0 9 * * *", None, "UTC").next_after(datetime(2025, 1, 1))
