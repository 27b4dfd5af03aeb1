"""Plain Celery on Redis, as a user would configure it for reliability, for the chaos anchor.

``acks_late`` + ``reject_on_worker_lost``, prefetch 1, and a short visibility timeout so that
messages of killed workers come back within the run: the settings with which plain Celery
loses the fewest tasks. None of this project's code is used.
"""

from __future__ import annotations

import functools
import os
import time

import redis
from celery import Celery

QUEUE = "chaos"
VISIBILITY_TIMEOUT_S = 8
BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("plain", broker=BROKER, backend=BROKER)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_time_limit=4,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "unacked_restore_interval": 2,
        "unacked_restore_throttle": 1,
    },
    result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
    worker_hijack_root_logger=False,
)


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(BROKER)


@app.task(name="plain.count")
def count(i: int, hold: float = 0.0) -> int:
    """Count one run of task ``i`` in the hash ``chaos:runs`` (as tests.support.tasks does)."""
    if hold:
        time.sleep(hold)
    _redis().hincrby("chaos:runs", str(i), 1)
    return i
