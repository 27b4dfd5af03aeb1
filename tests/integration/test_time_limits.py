"""A task past its soft and then its hard time limit is reported once, as a time limit, and the
worker replaces its child and goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.dead_letters.queue import DeadLetterQueue
from tests.support.alert_servers import WEBHOOK_SECRET, Receiver
from tests.support.metrics import by_label, samples
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

# Two timeouts in a minute fire the alert: one timeout reported twice would fire it too.
RULES = """
rules:
  - name: timeouts
    condition: task_timeout
    threshold: 2
    window: 1m
    cooldown: 1h
    severity: warning
    channels: [webhook]
    message_template: "{count} timeouts of {task_name}"
"""


def time_out_once(app: WorkerApp, client: redis.Redis, key: str) -> int:
    """Run a task that ignores its soft limit until the hard limit kills it; its child's pid."""
    result = app.send_task("tests.stubborn", args=[key, 30], queue=c.FILE_QUEUE)
    assert result.get(timeout=30, propagate=False) is not None
    assert result.state == "FAILURE"
    assert client.llen(f"soft:{key}") == 1  # the soft limit came first, and was ignored
    return int(client.lindex(f"started:{key}", 0) or 0)


def test_a_hard_time_limit_is_counted_once_alerted_once_and_dead_lettered_once(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
    webhook: Receiver,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES)
    port = free_port()
    start_worker(
        [c.FILE_QUEUE],
        env={
            "TASK_TIME_LIMIT": "2",
            "TASK_SOFT_TIME_LIMIT": "1",
            "MAX_COUNTDOWN": "1",
            "RETRY_BACKOFF_MAX": "1",
            "VISIBILITY_TIMEOUT": "30",
            "METRICS_PORT": str(port),
            "ALERTING_ENABLED": "true",
            "ALERT_RULES_FILE": str(rules),
            "ALERT_EVAL_INTERVAL": "0.2",
            "ALERT_WEBHOOK_URL": webhook.url + "/hook",
            "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )

    killed = time_out_once(producer_app, redis_client, "first")

    after = producer_app.send_task("tests.slow", args=["after", 0], queue=c.FILE_QUEUE)
    assert after.get(timeout=30)["pid"] != killed  # a new child serves the next task
    failed = samples(port, "celery_task_failed_total")
    assert by_label(failed, "exception") == {"TimeLimitExceeded": 1.0}
    letters = DeadLetterQueue(redis_client).list()
    assert [(letter.task_name, letter.exception_type) for letter in letters] == [
        ("tests.stubborn", "TimeLimitExceeded")
    ]
    assert webhook.hits == []  # one timeout so far: below the rule's threshold of two

    time_out_once(producer_app, redis_client, "second")

    hits = webhook.wait(1, timeout=15)
    assert "2 timeouts of tests.stubborn" in hits[0].body.decode()
    wait_for(lambda: len(DeadLetterQueue(redis_client)) == 2, timeout=10)
    assert by_label(samples(port, "celery_task_failed_total"), "exception") == {
        "TimeLimitExceeded": 2.0
    }
