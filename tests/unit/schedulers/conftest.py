"""Fixtures of the beat tests: schedulers on a test app with a private Redis and a clock the
test moves (tests/support/beat.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from personal_assistant.workers.worker_app import WorkerApp
from tests.support.apps import MakeApp
from tests.support.beat import Clock, MakeScheduler, scheduler_factory


@pytest.fixture
def clock() -> Clock:
    """A clock at T0 that only the test moves."""
    return Clock()


@pytest.fixture
def beat_app(make_app: MakeApp, redis_url: str, clean_env: pytest.MonkeyPatch) -> WorkerApp:
    """An app on the test's Redis, beat's own metrics server off."""
    return make_app(celery_broker_url=redis_url, beat_metrics_port=0)


@pytest.fixture
def make_scheduler(
    make_app: MakeApp, redis_url: str, clock: Clock, clean_env: pytest.MonkeyPatch
) -> Iterator[MakeScheduler]:
    """Schedulers (each on an app of its own, as separate beats are) reading ``clock``."""
    make, close = scheduler_factory(
        lambda: make_app(celery_broker_url=redis_url, beat_metrics_port=0), clock
    )
    yield make
    close()
