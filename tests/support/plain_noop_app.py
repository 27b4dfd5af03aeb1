"""Plain Celery as a user configures it, the anchor the benchmarks compare this package with.

The settings of ``../shared/anchors/bare_celery.py``: ``acks_late``, prefetch 1, JSON, Redis as
broker and result backend, and nothing else; none of this project's code. A worker runs it with
``celery -A tests.support.plain_noop_app worker``: the broker and backend come from
``CELERY_BROKER_URL``, the default queue from ``PLAIN_QUEUE``, and time limits (none unless
asked, as Celery's default) from ``PLAIN_TASK_TIME_LIMIT`` / ``PLAIN_TASK_SOFT_TIME_LIMIT``.
A test builds its own producer with :func:`make_app`.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

QUEUE = "plain"
NOOP = "plain.noop"
COLLECT = "plain.collect"
QUEUE_ENV = "PLAIN_QUEUE"
TIME_LIMIT_ENV = "PLAIN_TASK_TIME_LIMIT"
SOFT_TIME_LIMIT_ENV = "PLAIN_TASK_SOFT_TIME_LIMIT"


def make_app(
    broker: str,
    queue: str = QUEUE,
    *,
    time_limit: int | None = None,
    soft_time_limit: int | None = None,
) -> Celery:
    """A plain Celery app on ``broker`` (also its result backend) with a no-op task and a chord
    callback. Never the current app: a test process that builds one keeps its own current app
    (the shared test tasks bind to that); the worker makes its app current itself."""
    app = Celery("plain_noop", broker=broker, backend=broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        task_time_limit=time_limit,
        task_soft_time_limit=soft_time_limit,
        worker_hijack_root_logger=False,
    )

    @app.task(name=NOOP, shared=False)
    def noop(*args: Any) -> int:
        """Do nothing, like tests.noop."""
        return 1

    @app.task(name=COLLECT, shared=False)
    def collect(results: list[Any]) -> int:
        """A chord's callback: how many results it was given."""
        return len(results)

    return app


def _limit(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


app = make_app(
    os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    os.environ.get(QUEUE_ENV, QUEUE),
    time_limit=_limit(TIME_LIMIT_ENV),
    soft_time_limit=_limit(SOFT_TIME_LIMIT_ENV),
)
