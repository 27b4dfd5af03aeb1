"""The beat scheduler on a real Redis: one beat of several sends, each run exactly once, a
restart neither repeats nor forgets, a run claimed by a beat that died is published by the
next, and entries change at run time (the clock is the test's; Redis is real)."""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter

import pytest
import redis

from personal_assistant.workers.monitoring.liveness import BeatLiveness
from personal_assistant.workers.schedulers.beat_entry import entry_from_data
from personal_assistant.workers.schedulers.enhanced_scheduler import EnhancedScheduler
from personal_assistant.workers.schedulers.entry_store import EntryStore
from personal_assistant.workers.schedulers.run_claims import (
    Decision,
    claim_runs,
    entry_state,
    pending_runs,
)
from personal_assistant.workers.worker_app import WorkerApp
from tests.support.apps import MakeApp
from tests.support.beat import (
    CHEAP_TASK,
    T0,
    Clock,
    MakeScheduler,
    drive,
    entry_data,
    sent_runs,
    tick_until_idle,
)
from tests.support.redis_server import free_port

EVERY_SECOND = {"ping": entry_data()}


def test_each_tick_records_beats_time_in_redis(
    make_scheduler: MakeScheduler, redis_client: redis.Redis
) -> None:
    liveness = BeatLiveness(redis_client)
    scheduler = make_scheduler(EVERY_SECOND)
    assert liveness.last_tick() is None

    next_in = scheduler.tick()

    assert liveness.last_tick() == T0
    assert next_in >= 0


def test_the_first_beat_holds_the_lock_and_a_second_stands_by_and_sends_nothing(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    first, second = make_scheduler(EVERY_SECOND), make_scheduler(EVERY_SECOND)
    tick_until_idle(first)

    standby_sleep = second.tick()

    assert first.token is not None
    assert second.token is None
    assert 0 < standby_sleep <= second.lock_timeout / 3  # ticks often enough to take over
    list(drive([first, second], clock, seconds=5))
    assert len(sent_runs(redis_client)) == 5


def test_two_beats_ticking_side_by_side_send_each_second_exactly_once(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    beats = [make_scheduler(EVERY_SECOND), make_scheduler(EVERY_SECOND)]

    list(drive(beats, clock, seconds=30, step=0.25))

    runs = sent_runs(redis_client)
    dues = [run.due for run in runs]
    assert len(dues) == len(set(dues)) == 30  # one per second, none twice
    assert all(later - earlier == 1.0 for earlier, later in itertools.pairwise(dues))
    assert len({run.task_id for run in runs}) == 30


def test_a_restarted_beat_does_not_repeat_a_run_already_sent_and_keeps_the_schedule(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    first = make_scheduler(EVERY_SECOND)
    list(drive([first], clock, seconds=3))
    first.close()  # a clean stop releases the lock
    assert len(sent_runs(redis_client)) == 3

    restarted = make_scheduler(EVERY_SECOND)
    tick_until_idle(restarted)  # same instant: the run of this second is already sent
    assert len(sent_runs(redis_client)) == 3
    list(drive([restarted], clock, seconds=2))

    dues = [run.due for run in sent_runs(redis_client)]
    assert len(dues) == len(set(dues)) == 5
    assert entry_state(redis_client, "ping")["run_count"] == 5


def test_a_run_claimed_by_a_beat_that_died_before_publishing_is_published_by_the_next(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    dead = make_scheduler(EVERY_SECOND, lock_timeout=1.0)
    tick_until_idle(dead)
    assert dead.token is not None
    # The dead beat's last act: the claim of the next second's run, and no publish.
    due = clock.now + 1.0
    decision = Decision("ping", due, due + 1, due + 1, "run", task_id="the-claimed-run")
    assert claim_runs(redis_client, [decision], token=dead.token) == [True]
    dead.token = None  # killed: it neither renews nor releases
    time.sleep(1.2)  # the lock expires on Redis's clock

    heir = make_scheduler(EVERY_SECOND)
    tick_until_idle(heir)

    runs = sent_runs(redis_client)
    assert [run.task_id for run in runs] == ["the-claimed-run"]
    assert runs[0].due == due
    assert pending_runs(redis_client) == {}


def test_entries_added_disabled_and_enabled_at_run_time_take_effect_without_a_restart(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    scheduler = make_scheduler(EVERY_SECOND)
    store = EntryStore(redis_client)
    tick_until_idle(scheduler)

    store.add(entry_from_data("added", entry_data(interval=2.0)))
    store.set_enabled("ping", False)
    list(drive([scheduler], clock, seconds=4))
    store.set_enabled("ping", True)
    list(drive([scheduler], clock, seconds=2))

    per_entry = Counter(run.entry for run in sent_runs(redis_client))
    assert per_entry == {"added": 3, "ping": 2}


def test_an_invalid_entry_is_logged_by_name_and_the_others_run(
    make_scheduler: MakeScheduler,
    clock: Clock,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entries = {
        "ping": entry_data(),
        "bad-cron": entry_data(interval=None, cron="61 * * * *"),
        "unknown-task": entry_data(task=CHEAP_TASK + "_typo"),
        "unknown-queue": entry_data(queue="nowhere"),
        "closed-window": entry_data(interval=None, cron="0 3 * * *", window="* 09:00-17:00"),
    }
    with caplog.at_level(logging.ERROR, logger="personal_assistant.workers.schedulers"):
        scheduler = make_scheduler(entries)

    assert set(scheduler.catalogue.problems) == set(entries) - {"ping"}
    for name in ("bad-cron", "unknown-task", "unknown-queue", "closed-window"):
        assert f"beat entry {name!r}" in caplog.text
    assert "did you mean" in scheduler.catalogue.problems["unknown-task"]
    list(drive([scheduler], clock, seconds=2))
    assert {run.entry for run in sent_runs(redis_client)} == {"ping"}


def test_runs_carry_the_entrys_priority_and_a_stable_task_id(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    scheduler = make_scheduler({"urgent": entry_data(priority=10)})
    list(drive([scheduler], clock, seconds=2))

    runs = sent_runs(redis_client)
    assert len(runs) == 2
    assert all(run.task == CHEAP_TASK and run.entry == "urgent" for run in runs)
    assert {run.priority for run in runs} == {10}  # the seed's "high" (the broker clamps it)
    assert runs[0].task_id != runs[1].task_id


def test_an_unreachable_redis_is_logged_once_and_nothing_is_sent(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, clean_env: pytest.MonkeyPatch
) -> None:
    app = make_app(celery_broker_url=f"redis://127.0.0.1:{free_port()}/0", beat_metrics_port=0)
    scheduler = EnhancedScheduler(app=app)
    try:
        with caplog.at_level(logging.WARNING, logger="personal_assistant.workers.schedulers"):
            waits = [scheduler.tick(), scheduler.tick()]
    finally:
        scheduler.close()

    assert all(0 < wait <= 1.0 for wait in waits)
    assert caplog.text.count("beat cannot reach Redis") == 1
    assert scheduler.token is None


def test_a_broker_that_is_not_redis_is_refused_with_a_clear_error(
    make_app: MakeApp, clean_env: pytest.MonkeyPatch
) -> None:
    app: WorkerApp = make_app(celery_broker_url="amqp://guest@localhost//", beat_metrics_port=0)

    with pytest.raises(ValueError, match="keeps its state in Redis"):
        EnhancedScheduler(app=app)


def test_after_redis_lost_its_data_the_holder_takes_the_lock_again_and_re_plans(
    make_scheduler: MakeScheduler, clock: Clock, redis_client: redis.Redis
) -> None:
    scheduler = make_scheduler(EVERY_SECOND)
    list(drive([scheduler], clock, seconds=2))
    token_before = scheduler.token

    redis_client.flushall()  # a Redis restarted without persistence
    list(drive([scheduler], clock, seconds=3))

    assert token_before == scheduler.token == 1  # the fence counts from 1 again
    dues = [run.due for run in sent_runs(redis_client)]  # the queues were lost with the rest
    assert dues == [T0 + 3, T0 + 4, T0 + 5]  # every second after the loss, none skipped
    assert entry_state(redis_client, "ping")["run_count"] == 3
