"""Tasks used only by the integration tests; they record what happened in Redis.

Shared tasks, so every app (the worker's and each test's producer app) knows their names.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from typing import Any

import redis
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from personal_assistant.workers.config import get_settings
from personal_assistant.workers.errors import PermanentError, TransientError
from personal_assistant.workers.tasks.base_tasks import BaseTask


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    # Retries through a broker restart (tests restart Redis under load), up to about 10 s.
    return redis.Redis.from_url(
        get_settings().celery_broker_url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=30),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


@shared_task(base=BaseTask, bind=True, name="tests.record")
def record(self: BaseTask, tag: str) -> str:
    """Append ``tag`` to the list ``test:order``."""
    _redis().rpush("test:order", tag)
    return tag


@shared_task(base=BaseTask, bind=True, name="tests.flaky")
def flaky(self: BaseTask, key: str, transient_failures: int) -> int:
    """Fail transiently ``transient_failures`` times, then succeed; log each attempt's time."""
    client = _redis()
    client.rpush(f"attempts:{key}", repr(time.time()))
    attempt = int(client.llen(f"attempts:{key}"))
    if attempt <= transient_failures:
        raise TransientError(f"attempt {attempt} of {key} failed")
    return attempt


@shared_task(base=BaseTask, bind=True, name="tests.broken_until_fixed")
def broken_until_fixed(self: BaseTask, key: str) -> str:
    """Fail permanently until the key ``fixed:<key>`` exists."""
    client = _redis()
    client.rpush(f"attempts:{key}", repr(time.time()))
    if not client.exists(f"fixed:{key}"):
        raise PermanentError(f"{key} is broken")
    return "fixed"


@shared_task(base=BaseTask, bind=True, name="tests.slow")
def slow(self: BaseTask, key: str, seconds: float) -> dict[str, Any]:
    """Record the start, sleep, record the end."""
    client = _redis()
    client.rpush(f"started:{key}", os.getpid())
    time.sleep(seconds)
    client.rpush(f"done:{key}", os.getpid())
    return self.describe_execution()


@shared_task(base=BaseTask, bind=True, name="tests.step")
def step(
    self: BaseTask,
    name: str,
    fail: bool = False,
    result: Any = None,
    seconds: float = 0.0,
    *,
    gate: str | None = None,
) -> Any:
    """A workflow step: record its name in ``wf:ran``; maybe sleep, wait until the test pushes
    to the list ``gate`` (at most a minute), fail or return ``result``."""
    client = _redis()
    client.rpush("wf:ran", name)
    if seconds:
        time.sleep(seconds)
    if gate is not None:
        client.blpop([gate], timeout=60)
    if fail:
        raise PermanentError(f"{name} failed")
    return {"name": name} if result is None else result


@shared_task(name="tests.noop")
def noop(*args: Any) -> int:
    """Do nothing (benchmarks compare against Celery's own no-op)."""
    return 1


@shared_task(base=BaseTask, bind=True, name="tests.metered")
def metered(self: BaseTask, i: int, mode: str) -> int:
    """Record ground truth for the metrics test: each start, and how this attempt ends.

    Modes: ``ok``; ``fail`` (permanent); ``retry`` (transient once, then ok); ``kill`` (the
    first attempt SIGKILLs its own process, as the OOM killer would; the rerun is ok).
    """
    client = _redis()
    client.rpush("gt:started", i)
    if mode == "fail":
        client.rpush("gt:failed", i)
        raise PermanentError(f"task {i} fails")
    if mode == "retry" and client.incr(f"gt:attempt:{i}") == 1:
        client.rpush("gt:retried", i)
        raise TransientError(f"task {i} blips")
    if mode == "kill" and client.incr(f"gt:attempt:{i}") == 1:
        client.rpush("gt:killed", i)
        os.kill(os.getpid(), signal.SIGKILL)
    client.rpush("gt:succeeded", i)
    return i


@shared_task(base=BaseTask, bind=True, name="tests.fail_now")
def fail_now(self: BaseTask, key: str) -> None:
    """Fail at once, recording the moment of failure (alert latency benchmark)."""
    _redis().set(f"failed_at:{key}", repr(time.time()))
    raise PermanentError(f"{key} failed")


@shared_task(base=BaseTask, bind=True, name="tests.count")
def count(self: BaseTask, i: int, hold: float = 0.0) -> int:
    """Count one run of task ``i`` in the hash ``chaos:runs`` (after holding ``hold`` s)."""
    if hold:
        time.sleep(hold)
    _redis().hincrby("chaos:runs", str(i), 1)
    return i


@shared_task(base=BaseTask, bind=True, name="tests.stubborn")
def stubborn(self: BaseTask, key: str, seconds: float) -> str:
    """Sleep ``seconds``, ignoring the soft time limit (so only the hard limit stops it)."""
    client = _redis()
    client.rpush(f"started:{key}", os.getpid())
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except SoftTimeLimitExceeded:
            client.rpush(f"soft:{key}", os.getpid())
    return key
