"""Each beat pattern acting, and not acting when its condition is false: jitter, active
window, no overlap, backlog skip, periodic workflow, misfire policy, and a daily run through
both daylight-saving changes (the scheduler on a real Redis; the clock is the test's)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import redis
from celery import states

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.schedulers.beat_timing import jitter_offset
from personal_assistant.workers.schedulers.run_claims import BEAT_ENTRY_PREFIX
from tests.support.beat import (
    CHEAP_QUEUE,
    Clock,
    MakeScheduler,
    drive,
    entry_data,
    sent_runs,
    tick_until_idle,
)

BERLIN = ZoneInfo("Europe/Berlin")
# A task workflows may run (maintenance tasks may not).
FILE_TASK = f"{c.TASKS_PACKAGE}.file_tasks.cleanup_temp_files"


def skips(client: redis.Redis, entry: str) -> dict[str, int]:
    """The entry's skip counts by reason."""
    raw: dict[bytes, bytes] = client.hgetall(f"{BEAT_ENTRY_PREFIX}{entry}")  # type: ignore[assignment]
    return {
        k.decode().removeprefix("skips:"): int(v) for k, v in raw.items() if k.startswith(b"skips:")
    }


def test_jitter_delays_each_run_by_its_own_offset_and_no_jitter_sends_on_time(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    scheduler = make_scheduler(
        {"spread": entry_data(interval=60.0, jitter=30.0), "punctual": entry_data(interval=60.0)}
    )
    tick_until_idle(scheduler)
    start = clock.now

    list(drive([scheduler], clock, seconds=180, step=0.5))

    runs = {run.due: run for run in sent_runs(redis_client) if run.entry == "spread"}
    assert sorted(runs) == [start + 60, start + 120, start + 180][: len(runs)]
    assert len(runs) >= 2
    punctual = [run.due for run in sent_runs(redis_client) if run.entry == "punctual"]
    assert punctual == [start + 60, start + 120, start + 180]
    # Sent no earlier than its offset: replay the first two minutes and watch the queue.
    offsets = [jitter_offset(scheduler.catalogue.entries["spread"], due) for due in sorted(runs)]
    assert all(0 <= offset < 30 for offset in offsets)
    assert len(set(offsets)) == len(offsets)  # each time its own offset


def test_a_run_is_not_sent_before_its_jitter_offset(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    scheduler = make_scheduler({"spread": entry_data(interval=60.0, jitter=30.0)})
    tick_until_idle(scheduler)
    due = clock.now + 60
    offset = jitter_offset(scheduler.catalogue.entries["spread"], due)

    clock.now = due + offset - 0.01
    tick_until_idle(scheduler)
    assert sent_runs(redis_client) == []
    clock.now = due + offset
    tick_until_idle(scheduler)
    assert [run.due for run in sent_runs(redis_client)] == [due]


def test_an_active_window_skips_the_times_outside_it_and_runs_those_inside(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    # Every 30 minutes from 07:00 to 12:00 Berlin (UTC+1 in December), on a Wednesday.
    clock.now = datetime(2026, 12, 2, 7, 0, tzinfo=BERLIN).timestamp()
    window = "mon-fri 09:00-11:00 Europe/Berlin"
    scheduler = make_scheduler(
        {"office": entry_data(interval=None, cron="*/30 * * * *", window=window)}
    )

    list(drive([scheduler], clock, seconds=5 * 3600, step=60))

    hours = [
        datetime.fromtimestamp(run.due, BERLIN).strftime("%H:%M") for run in sent_runs(redis_client)
    ]
    assert hours == ["09:00", "09:30", "10:00", "10:30"]
    assert skips(redis_client, "office")["window"] == 6  # 07:30 ... 08:30 and 11:00 ... 12:00


def test_a_window_on_other_days_sends_nothing_on_a_weekend(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    clock.now = datetime(2026, 12, 5, 8, 0, tzinfo=BERLIN).timestamp()  # a Saturday
    window = "mon-fri 09:00-17:00 Europe/Berlin"
    scheduler = make_scheduler(
        {"office": entry_data(interval=None, cron="0 * * * *", window=window)}
    )

    list(drive([scheduler], clock, seconds=4 * 3600, step=300))

    assert sent_runs(redis_client) == []
    assert skips(redis_client, "office")["window"] == 4


def test_no_overlap_skips_while_the_previous_run_is_queued_and_runs_once_it_ended(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    scheduler = make_scheduler({"single": entry_data(no_overlap=True), "plain": entry_data()})
    list(drive([scheduler], clock, seconds=3))
    single = [run for run in sent_runs(redis_client) if run.entry == "single"]
    assert len(single) == 1  # the first run never ended: the next two were skipped
    assert skips(redis_client, "single")["overlap"] == 2
    assert Counter(run.entry for run in sent_runs(redis_client))["plain"] == 3

    scheduler.app.backend.store_result(single[0].task_id, 1, states.SUCCESS)
    list(drive([scheduler], clock, seconds=1))

    assert len([run for run in sent_runs(redis_client) if run.entry == "single"]) == 2


def test_backlog_skip_holds_runs_while_the_queue_is_deeper_than_the_limit(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    scheduler = make_scheduler({"sweep": entry_data(max_queue_depth=2)})

    list(drive([scheduler], clock, seconds=5))

    assert queue_depths(redis_client, [CHEAP_QUEUE])[CHEAP_QUEUE] == 3  # 3 sent, then held
    assert skips(redis_client, "sweep")["backlog"] == 2
    redis_client.delete(*[k for k in redis_client.keys(f"{CHEAP_QUEUE}*") if b"binding" not in k])
    list(drive([scheduler], clock, seconds=1))
    assert queue_depths(redis_client, [CHEAP_QUEUE])[CHEAP_QUEUE] == 1


def test_a_periodic_workflow_entry_submits_its_workflow_once_per_time(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    definition = {"name": "nightly-report", "tasks": [{"id": "clean", "task": FILE_TASK}]}
    scheduler = make_scheduler({"report": {"workflow": definition, "interval": 60.0}})

    list(drive([scheduler], clock, seconds=120, step=10))

    meta_keys: list[bytes] = redis_client.keys(keys.workflow_meta_key("*"))  # type: ignore[assignment]
    workflow_ids = sorted(k.decode().split(":")[2] for k in meta_keys)
    assert len(workflow_ids) == 2
    meta = redis_client.hgetall(keys.workflow_meta_key(workflow_ids[0]))
    assert json.loads(meta[b"name"]) == "nightly-report"
    assert [run.task for run in sent_runs(redis_client, c.FILE_QUEUE)] == [FILE_TASK, FILE_TASK]


def test_a_periodic_workflow_with_no_overlap_waits_for_the_running_one(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    definition = {"name": "chain", "tasks": [{"id": "clean", "task": FILE_TASK}]}
    scheduler = make_scheduler(
        {"report": {"workflow": definition, "interval": 60.0, "no_overlap": True}}
    )

    list(drive([scheduler], clock, seconds=120, step=10))

    assert len(redis_client.keys(keys.workflow_meta_key("*"))) == 1  # the first still runs
    assert skips(redis_client, "report")["overlap"] == 1


def test_after_an_outage_run_once_collapses_the_missed_times_into_one_run(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    scheduler = make_scheduler({"catch-up": entry_data(interval=60.0)})
    tick_until_idle(scheduler)
    start = clock.now

    clock.advance(10 * 60 + 5)  # beat was down for ten of its times
    tick_until_idle(scheduler)

    assert [run.due for run in sent_runs(redis_client)] == [start + 600]
    assert skips(redis_client, "catch-up")["missed"] == 9


def test_misfire_skip_drops_a_run_later_than_its_grace_but_runs_one_within_it(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    late = entry_data(interval=600.0, misfire="skip", misfire_grace=30.0)
    scheduler = make_scheduler({"strict": late})
    tick_until_idle(scheduler)
    start = clock.now

    clock.now = start + 600 + 20  # 20 s late: within the grace
    tick_until_idle(scheduler)
    clock.now = start + 1200 + 45  # 45 s late: a misfire
    tick_until_idle(scheduler)

    assert [run.due for run in sent_runs(redis_client)] == [start + 600]
    assert skips(redis_client, "strict")["misfire"] == 1


def local_days_of(dues: list[float]) -> Counter[date]:
    """How many runs fell on each local (Berlin) day."""
    return Counter(datetime.fromtimestamp(due, BERLIN).date() for due in dues)


def test_a_daily_run_in_berlin_is_sent_once_a_day_through_both_daylight_saving_changes(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    daily = entry_data(interval=None, cron="30 2 * * *", timezone="Europe/Berlin")
    dues: list[float] = []
    # Clocks jump 02:00 -> 03:00 on 28 March 2027 (02:30 does not exist) and fall back
    # 03:00 -> 02:00 on 31 October 2027 (02:30 happens twice).
    for first_day in (date(2027, 3, 26), date(2027, 10, 29)):
        redis_client.flushdb()
        clock.now = datetime(*first_day.timetuple()[:3], 12, 0, tzinfo=UTC).timestamp()
        scheduler = make_scheduler({"daily": daily})
        list(drive([scheduler], clock, seconds=4 * 86_400, step=300))
        dues += [run.due for run in sent_runs(redis_client)]
        scheduler.close()

    per_day = local_days_of(dues)
    expected = (
        [date(2027, 3, d) for d in (27, 28, 29, 30)]
        + [date(2027, 10, d) for d in (30, 31)]
        + [date(2027, 11, d) for d in (1, 2)]
    )
    assert per_day == Counter(expected)  # every day once: none doubled, none dropped
    spring = [
        datetime.fromtimestamp(d, BERLIN)
        for d in dues
        if datetime.fromtimestamp(d, BERLIN).date() == date(2027, 3, 28)
    ]
    assert spring[0].strftime("%H:%M %Z") == "03:00 CEST"  # the jump, as ai/schedule.py says
    autumn = [
        datetime.fromtimestamp(d, BERLIN)
        for d in dues
        if datetime.fromtimestamp(d, BERLIN).date() == date(2027, 10, 31)
    ]
    assert autumn[0].strftime("%H:%M %Z") == "02:30 CEST"  # the first of the two
