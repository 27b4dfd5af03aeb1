"""Workers and beat ride out Redis restarts under load (graceful and kill -9); no task is lost,
and the task running when the connection dropped runs again."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp, create_app
from personal_assistant.workers.config import load_settings
from tests.support.chaos import RUNS_KEY, all_ran, run_counts
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_for
from tests.support.worker import APP, WorkerProcess, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

TASKS = 1500
OUTAGES = 5
WORKERS = 2
CONCURRENCY = 2
# Time limits well above an outage (a task blocked on Redis must not be killed for being slow);
# a consumer silent for 3 s is dead, and what it held goes back.
# The task the first outage must catch running: it starts on the first worker to be ready, and
# the outage comes once the second worker and beat are up too (a worker takes 2 to 3 s to
# start), so it runs for longer than that.
LONG_TASK_S = 6.0
RESTART_ENV = {
    "TASK_TIME_LIMIT": "20",
    "TASK_SOFT_TIME_LIMIT": "15",
    "MAX_COUNTDOWN": "10",
    "RETRY_BACKOFF_MAX": "10",
    "VISIBILITY_TIMEOUT": "30",
    "UNACKED_RESTORE_INTERVAL": "1",
    "UNACKED_RESTORE_THROTTLE": "1",
    "WORKER_HEARTBEAT_INTERVAL": "1",
    "WORKER_DOWN_AFTER": "3",
}


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of its own with the AOF fsynced on every write: what it acknowledged, it keeps."""
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    yield server
    server.stop()


def outage(server: RedisServer, how: str, down_for: float) -> None:
    """Stop the server (SHUTDOWN or kill -9), keep it down, start it again on the same data."""
    if how == "kill":
        server.kill()
    else:
        server.stop()
    time.sleep(down_for)
    server.start()


def progress(client: redis.Redis, tasks: int) -> Callable[[], bool]:
    """True once ``tasks`` more counting tasks have run than when this was called."""
    before = int(client.hlen(RUNS_KEY))
    return lambda: int(client.hlen(RUNS_KEY)) >= before + tasks


@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_five_redis_restarts_under_load_lose_no_task_and_no_worker(
    how: str, durable_redis: RedisServer, tmp_path: Path
) -> None:
    url = durable_redis.url
    client = redis.Redis.from_url(url)
    app: WorkerApp = create_app(load_settings(celery_broker_url=url, celery_result_backend=url))
    for i in range(TASKS):
        app.send_task("tests.count", args=[i, 0.01], queue=c.FILE_QUEUE)
    app.send_task("tests.slow", args=["long", LONG_TASK_S], queue=c.FILE_QUEUE, priority=9)
    workers = [
        WorkerProcess(
            url,
            [c.FILE_QUEUE],
            log_dir=tmp_path / "logs",
            concurrency=CONCURRENCY,
            env={**RESTART_ENV, "METRICS_PORT": str(free_port())},
            app="tests.support.celery_test_app",
        ).start()
        for _ in range(WORKERS)
    ]
    beat_log = (tmp_path / "beat.log").open("wb")
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", APP, "beat", "-s", str(tmp_path / "schedule")],
        env=worker_env(url, RESTART_ENV),
        stdout=beat_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    rng = random.Random(7)
    try:
        wait_for(lambda: client.llen("started:long") >= 1, timeout=30)
        for number in range(OUTAGES):
            if number:  # the first outage hits the long task while it runs
                wait_for(progress(client, 20), timeout=60)
            outage(durable_redis, how, down_for=rng.uniform(0.5, 1.5))
        wait_for(all_ran(client, TASKS), timeout=120, interval=0.5)
        wait_for(lambda: client.llen("done:long") >= 1, timeout=60)
        lost, repeated = run_counts(client, TASKS)
        exited = [w.hostname for w in workers if w.process and w.process.poll() is not None]
        beat_alive = beat.poll() is None
        long_starts = int(client.llen("started:long"))
        logs = "\n".join(w.log() for w in workers)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.stop()
        beat.terminate()
        beat.wait(timeout=30)
        beat_log.close()
        app.close()
        client.close()

    assert lost == []
    assert exited == []
    assert beat_alive, (tmp_path / "beat.log").read_text()[-3000:]
    assert "Unrecoverable error" not in logs
    # The task running at the first outage was stopped and ran again to its end.
    assert long_starts >= 2
    # Only what was in flight at an outage may run twice: at most what the workers hold.
    assert len(repeated) <= OUTAGES * WORKERS * CONCURRENCY * 2, repeated
    print(f"{how}: repeated {len(repeated)} of {TASKS} over {OUTAGES} outages")
