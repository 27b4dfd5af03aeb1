"""When beat entries run (schedulers/beat_timing.py): interval phase, cron times through
daylight-saving changes, deterministic jitter, the plan for a due entry (on time, caught up,
misfired, outside its window), catching up after long outages, and windows that never open."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from personal_assistant.workers.schedulers.beat_entry import BeatEntry, EntryError, entry_from_data
from personal_assistant.workers.schedulers.beat_timing import (
    MAX_CATCH_UP_STEPS,
    Plan,
    check_jitter_fits,
    check_window_opens,
    first_time,
    jitter_offset,
    latest_time,
    next_time,
    plan,
    send_at,
)

TASK = "personal_assistant.workers.tasks.file_tasks.cleanup_temp_files"
BERLIN = ZoneInfo("Europe/Berlin")
BUSINESS_HOURS = "mon-fri 09:00-17:00 Europe/Berlin"


def entry(name: str = "job", **data: Any) -> BeatEntry:
    """A checked entry of ``TASK`` with ``data``."""
    return entry_from_data(name, {"task": TASK, **data})


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, zone: Any = UTC
) -> float:
    """Unix seconds of a wall-clock time in ``zone``."""
    return datetime(year, month, day, hour, minute, tzinfo=zone).timestamp()


def local(seconds: float, zone: ZoneInfo = BERLIN) -> datetime:
    """The wall-clock time of ``seconds`` in ``zone``."""
    return datetime.fromtimestamp(seconds, zone)


# -- times -------------------------------------------------------------------------------------


def test_an_interval_keeps_its_phase_from_the_time_before() -> None:
    every_minute = entry(interval=60)
    due = at(2027, 1, 4, 12, 0) + 7.25  # an odd phase: 7.25 s past the minute

    assert next_time(every_minute, due) == due + 60
    fire, missed = latest_time(every_minute, due, due + 150.5)
    assert (fire, missed) == (due + 120, 2)
    assert plan(every_minute, due, due + 150.5).next_due == due + 180


def test_an_interval_entry_first_runs_one_interval_after_it_is_seen() -> None:
    now = at(2027, 1, 4, 12, 0) + 13.0

    assert first_time(entry(interval=300), now) == now + 300


def test_a_cron_entry_first_runs_at_its_next_time() -> None:
    nightly = entry(cron="0 2 * * *")

    assert first_time(nightly, at(2027, 1, 4, 1, 59)) == at(2027, 1, 4, 2, 0)
    assert first_time(nightly, at(2027, 1, 4, 2, 0)) == at(2027, 1, 5, 2, 0)  # strictly after


def test_a_cron_entry_runs_on_its_zones_wall_clock_in_winter_and_summer() -> None:
    morning = entry(cron="0 9 * * *", timezone="Europe/Berlin")

    assert next_time(morning, at(2027, 1, 4)) == at(2027, 1, 4, 8, 0)  # UTC+1
    assert next_time(morning, at(2027, 7, 5)) == at(2027, 7, 5, 7, 0)  # UTC+2


def runs_per_local_date(cron: str, start: float, end: float) -> Counter[date]:
    """How many times the Berlin ``cron`` runs on each local date between two instants."""
    nightly = entry(cron=cron, timezone="Europe/Berlin")
    runs: Counter[date] = Counter()
    moment = start
    while (moment := next_time(nightly, moment)) < end:
        runs[local(moment).date()] += 1
    return runs


@pytest.mark.parametrize(
    ("year", "month", "change_day"),
    [(2026, 3, 29), (2027, 3, 28), (2026, 10, 25), (2027, 10, 31)],
    ids=["spring-2026", "spring-2027", "autumn-2026", "autumn-2027"],
)
def test_a_daily_0230_berlin_job_runs_exactly_once_on_every_day_of_a_dst_month(
    year: int, month: int, change_day: int
) -> None:
    start = at(year, month, 1, zone=BERLIN)
    end = at(year, month + 1, 1, zone=BERLIN)

    runs = runs_per_local_date("30 2 * * *", start, end)

    first = date(year, month, 1)
    every_day = {first + timedelta(days=n) for n in range((date(year, month + 1, 1) - first).days)}
    assert set(runs) == every_day  # never a day without a run
    assert set(runs.values()) == {1}  # never a day with two
    assert date(year, month, change_day) in runs


def test_on_the_spring_forward_day_the_missing_0230_runs_when_the_clocks_jump() -> None:
    nightly = entry(cron="30 2 * * *", timezone="Europe/Berlin")

    moment = next_time(nightly, at(2027, 3, 28, 0, 0, zone=BERLIN))

    # 02:00 CET became 03:00 CEST, which is 01:00 UTC.
    assert moment == at(2027, 3, 28, 1, 0)
    assert local(moment).strftime("%H:%M %Z") == "03:00 CEST"
    assert next_time(nightly, moment) == at(2027, 3, 29, 2, 30, zone=BERLIN)


def test_on_the_fall_back_day_the_repeated_0230_runs_at_its_first_occurrence() -> None:
    nightly = entry(cron="30 2 * * *", timezone="Europe/Berlin")

    moment = next_time(nightly, at(2027, 10, 31, 0, 0, zone=BERLIN))

    assert moment == at(2027, 10, 31, 0, 30)  # 02:30 CEST
    assert local(moment).strftime("%H:%M %Z") == "02:30 CEST"
    # Asked again from inside the repeated hour (02:45 CET), the next run is the next day's.
    assert next_time(nightly, at(2027, 10, 31, 1, 45)) == at(2027, 11, 1, 1, 30)


# -- jitter ------------------------------------------------------------------------------------


def test_jitter_is_the_same_for_the_same_entry_and_time_on_every_beat() -> None:
    due = at(2027, 1, 4, 2, 0)
    first = entry("nightly", cron="0 2 * * *", jitter=300)
    rebuilt = entry_from_data("nightly", first.to_data())  # another beat, or after a restart

    assert jitter_offset(first, due) == jitter_offset(rebuilt, due)
    assert send_at(first, due) == due + jitter_offset(first, due)


def test_jitter_does_not_depend_on_the_processs_hash_seed() -> None:
    code = (
        "from personal_assistant.workers.schedulers.beat_entry import entry_from_data\n"
        "from personal_assistant.workers.schedulers.beat_timing import jitter_offset\n"
        f"e = entry_from_data('nightly', {{'task': {TASK!r}, 'cron': '0 2 * * *', "
        "'jitter': 300})\n"
        "print(repr(jitter_offset(e, 1798941600.0)))\n"
    )
    offsets = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    here = jitter_offset(entry("nightly", cron="0 2 * * *", jitter=300), 1798941600.0)

    assert offsets == {repr(here)}


def test_jitter_stays_below_its_bound_and_spreads_over_it() -> None:
    hourly = entry(cron="0 * * * *", jitter=60)
    dues = [at(2027, 1, 4) + 3600 * n for n in range(500)]

    offsets = [jitter_offset(hourly, due) for due in dues]

    assert all(0 <= offset < 60 for offset in offsets)
    assert len(set(offsets)) == len(offsets)
    assert min(offsets) < 6 and max(offsets) > 54
    # Each sixth of the range gets a fair share (about 83 of 500).
    shares = Counter(int(offset // 10) for offset in offsets)
    assert all(40 < shares[sixth] < 130 for sixth in range(6))


def test_two_entries_due_at_the_same_time_get_different_offsets() -> None:
    due = at(2027, 1, 4, 2, 0)

    first = jitter_offset(entry("alpha", cron="0 2 * * *", jitter=300), due)
    second = jitter_offset(entry("beta", cron="0 2 * * *", jitter=300), due)

    assert first != second


def test_an_entry_without_jitter_is_sent_at_its_time() -> None:
    due = at(2027, 1, 4, 2, 0)

    assert jitter_offset(entry(cron="0 2 * * *"), due) == 0.0
    assert send_at(entry(cron="0 2 * * *"), due) == due


# -- plan --------------------------------------------------------------------------------------


def test_an_entry_on_time_fires_for_its_time_and_waits_for_the_next() -> None:
    every_five = entry(cron="*/5 * * * *")
    due = at(2027, 1, 4, 12, 5)

    assert plan(every_five, due, due + 0.4) == Plan(
        due=due, next_due=due + 300, missed=0, skip=None
    )


def test_catch_up_collapses_the_missed_times_into_the_latest_and_counts_them() -> None:
    every_five = entry(cron="*/5 * * * *")
    due = at(2027, 1, 4, 12, 0)
    now = at(2027, 1, 4, 13, 2)  # the beat was down for an hour

    decision = plan(every_five, due, now)

    assert decision.due == at(2027, 1, 4, 13, 0)
    assert decision.missed == 12  # 12:00, 12:05, ..., 12:55
    assert decision.next_due == at(2027, 1, 4, 13, 5)
    assert decision.skip is None  # run_once: late runs still run, once


def test_a_skip_on_misfire_entry_later_than_its_grace_is_skipped() -> None:
    strict = entry(cron="0 * * * *", misfire="skip", misfire_grace=60)
    due = at(2027, 1, 4, 12, 0)

    decision = plan(strict, due, due + 61)

    assert decision.skip == "misfire"
    assert (decision.due, decision.next_due) == (due, due + 3600)


def test_a_skip_on_misfire_entry_within_its_grace_runs() -> None:
    strict = entry(cron="0 * * * *", misfire="skip", misfire_grace=60)
    due = at(2027, 1, 4, 12, 0)

    assert plan(strict, due, due + 59).skip is None


def test_a_skip_on_misfire_entry_runs_its_latest_time_when_that_is_within_the_grace() -> None:
    strict = entry(interval=60, misfire="skip", misfire_grace=30)
    due = at(2027, 1, 4, 12, 0)

    decision = plan(strict, due, due + 140)  # the latest time, due + 120, is 20 s old

    assert (decision.due, decision.missed, decision.skip) == (due + 120, 2, None)


def test_the_grace_counts_from_the_jittered_send_time() -> None:
    strict = entry("strict", cron="0 * * * *", misfire="skip", misfire_grace=10, jitter=600)
    due = at(2027, 1, 4, 12, 0)
    sent = send_at(strict, due)

    assert sent - due > 20  # else this test could not tell the two apart
    assert plan(strict, due, sent + 9).skip is None
    assert plan(strict, due, sent + 11).skip == "misfire"


def test_a_time_outside_the_window_is_skipped_and_one_inside_runs() -> None:
    hourly = entry(cron="0 * * * *", timezone="Europe/Berlin", window=BUSINESS_HOURS)
    night = at(2027, 1, 4, 3, 0, zone=BERLIN)
    morning = at(2027, 1, 4, 10, 0, zone=BERLIN)

    skipped = plan(hourly, night, night + 1)
    ran = plan(hourly, morning, morning + 1)

    assert (skipped.skip, skipped.next_due) == ("window", night + 3600)
    assert (ran.skip, ran.next_due) == (None, morning + 3600)


def test_catching_up_a_minutely_cron_after_three_days_finds_the_last_minute_quickly() -> None:
    every_minute = entry(cron="* * * * *")
    now = at(2027, 1, 4, 12, 0) + 30.0
    due = now - 3 * 86_400

    started = time.perf_counter()
    fire, missed = latest_time(every_minute, due, now)
    elapsed = time.perf_counter() - started

    assert fire == at(2027, 1, 4, 12, 0)
    assert next_time(every_minute, fire) > now
    # Past MAX_CATCH_UP_STEPS the walk jumps ahead and the count is a lower bound (documented).
    assert MAX_CATCH_UP_STEPS < missed <= 3 * 1440
    assert elapsed < 1.0


def test_catching_up_an_hourly_cron_after_two_hundred_days_finds_the_last_hour() -> None:
    hourly = entry(cron="0 * * * *")
    now = at(2027, 1, 10, 15, 20)

    fire, _ = latest_time(hourly, now - 200 * 86_400, now)

    assert fire == at(2027, 1, 10, 15, 0)


def test_catching_up_a_weekend_only_cron_on_a_weekday_finds_the_last_weekend_run() -> None:
    weekends = entry(cron="*/5 * * * sat,sun")
    due = at(2026, 12, 26)  # a Saturday; four weekends (2,304 times) pass before now
    now = at(2027, 1, 20, 12, 0)  # a Wednesday

    fire, _ = latest_time(weekends, due, now)

    assert fire == at(2027, 1, 17, 23, 55)  # the last Sunday's last run
    assert next_time(weekends, fire) > now  # one run after the outage, not a second next tick


def test_a_due_time_still_ahead_is_its_own_latest_time() -> None:
    hourly = entry(cron="0 * * * *")
    due = at(2027, 1, 4, 12, 0)

    assert latest_time(hourly, due, due - 5) == (due, 0)
    assert latest_time(hourly, due, due) == (due, 0)


# -- windows that never open ------------------------------------------------------------------


def test_a_window_that_no_run_falls_into_is_refused() -> None:
    night_job = entry("night", cron="0 3 * * *", timezone="Europe/Berlin", window=BUSINESS_HOURS)

    with pytest.raises(EntryError, match="window 'mon-fri 09:00-17:00 Europe/Berlin' never opens"):
        check_window_opens(night_job, at(2027, 1, 4))


def test_a_window_that_runs_fall_into_is_accepted() -> None:
    office_job = entry(
        "office", cron="0 10 * * mon-fri", timezone="Europe/Berlin", window=BUSINESS_HOURS
    )

    check_window_opens(office_job, at(2027, 1, 9, 12))  # asked on a Saturday


def test_an_entry_without_a_window_or_an_interval_planned_before_is_not_checked() -> None:
    check_window_opens(entry(cron="0 3 * * *"), at(2027, 1, 4))
    weekly_slot = entry(interval=86_400, window="sun 03:00-03:01")
    check_window_opens(weekly_slot, at(2027, 1, 4), new=False)


def test_a_minutely_cron_with_a_window_later_in_the_week_is_accepted() -> None:
    sunday_hour = entry("sunday", cron="* * * * *", window="sun 09:00-10:00")

    check_window_opens(sunday_hour, at(2027, 1, 4, 12))  # asked on a Monday


def test_a_cron_jitter_longer_than_the_gap_between_its_times_is_refused() -> None:
    tight = entry_from_data("tight", {"task": "t", "cron": "*/5 * * * *", "jitter": 600})
    loose = entry_from_data("loose", {"task": "t", "cron": "*/5 * * * *", "jitter": 120})

    with pytest.raises(EntryError, match=r"beat entry 'tight': jitter \(600 s\) must be shorter"):
        check_jitter_fits(tight, at(2027, 1, 4))
    check_jitter_fits(loose, at(2027, 1, 4))


def test_a_new_daily_interval_outside_a_short_window_is_refused_but_not_a_planned_one() -> None:
    daily = entry_from_data("daily", {"task": "t", "interval": 86_400, "window": "* 09:00-09:05"})

    with pytest.raises(EntryError, match="never opens"):
        check_window_opens(daily, at(2027, 1, 4, 14))
    check_window_opens(daily, at(2027, 1, 4, 9, 1))  # added at 09:01: every run at 09:01
    check_window_opens(daily, at(2027, 1, 4, 14), new=False)  # its phase was set before
