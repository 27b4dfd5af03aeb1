"""The beat scheduler records each tick in Redis for beat's health check, and a Redis it cannot
reach never stops the schedule."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from personal_assistant.workers.monitoring.liveness import BeatLiveness
from personal_assistant.workers.schedulers.enhanced_scheduler import EnhancedScheduler
from personal_assistant.workers.worker_app import WorkerApp
from tests.support.apps import MakeApp
from tests.support.redis_server import free_port

pytestmark = pytest.mark.usefixtures("clean_env")

MakeScheduler = Callable[[WorkerApp], EnhancedScheduler]


@pytest.fixture
def make_scheduler(tmp_path: Path) -> Iterator[MakeScheduler]:
    """Schedulers of an app, with their schedule file in the test's directory (closed after)."""
    made: list[EnhancedScheduler] = []

    def make(app: WorkerApp) -> EnhancedScheduler:
        scheduler = EnhancedScheduler(app=app, schedule_filename=str(tmp_path / "schedule"))
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()


def test_each_tick_records_beats_time_in_redis(
    make_app: MakeApp, make_scheduler: MakeScheduler, redis_url: str, redis_client: redis.Redis
) -> None:
    liveness = BeatLiveness(redis_client)
    scheduler = make_scheduler(make_app(celery_broker_url=redis_url))
    assert liveness.last_tick() is None

    before = time.time()
    next_in = scheduler.tick()

    last = liveness.last_tick()
    assert last is not None
    assert before - 1 <= last <= time.time() + 1
    assert isinstance(next_in, float)
    assert next_in >= 0


def test_a_later_tick_moves_the_recorded_time_forward(
    make_app: MakeApp, make_scheduler: MakeScheduler, redis_url: str, redis_client: redis.Redis
) -> None:
    liveness = BeatLiveness(redis_client)
    scheduler = make_scheduler(make_app(celery_broker_url=redis_url))
    liveness.tick(now=1_000.0)  # a tick of long ago

    scheduler.tick()

    age = liveness.age()
    assert age is not None
    assert age < 60


def test_an_unreachable_redis_is_logged_and_the_schedule_goes_on(
    make_app: MakeApp, make_scheduler: MakeScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    scheduler = make_scheduler(make_app(celery_broker_url=nobody))

    with caplog.at_level(logging.WARNING, logger="personal_assistant.workers.schedulers"):
        next_in = scheduler.tick()

    assert isinstance(next_in, float)
    assert "could not record beat liveness" in caplog.text
