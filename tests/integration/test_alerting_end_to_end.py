"""A worker whose task fails 5 times in a window sends exactly one alert per channel, then one
resolve; a dead channel delays none of the others."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.support.alert_servers import LoopbackSMTP, Mailbox, Receiver
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

SECRET = "end-to-end-webhook-secret-of-32-bytes-or-more"  # noqa: S105 - a test secret
RULES = """
rules:
  - name: broken_parser
    condition: task_failure
    threshold: 5
    window: 4s
    cooldown: 1h
    severity: critical
    channels: [webhook, slack, email]
    group_by: [task_name]
    message_template: "{count} failures of {task_name}: {error}"
"""


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver, Mailbox, LoopbackSMTP]]:
    webhook, slack, mailbox = Receiver(secret=SECRET), Receiver(), Mailbox()
    smtp = LoopbackSMTP(mailbox)
    smtp.start()
    yield webhook, slack, mailbox, smtp
    smtp.stop()
    webhook.close()
    slack.close()


def alert_env(tmp_path: Path, webhook: Receiver, slack: Receiver, smtp_port: int) -> dict[str, str]:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES)
    return {
        "ALERTING_ENABLED": "true",
        "ALERT_RULES_FILE": str(rules),
        "ALERT_EVAL_INTERVAL": "0.5",
        "METRICS_PORT": str(free_port()),
        "ALERT_WEBHOOK_URL": webhook.url + "/hook",
        "ALERT_WEBHOOK_SECRET": SECRET,
        "ALERT_SLACK_WEBHOOK_URL": slack.url + "/slack",
        "ALERT_SMTP_HOST": "127.0.0.1",
        "ALERT_SMTP_PORT": str(smtp_port),
        "ALERT_SMTP_FROM": "workers@example.test",
        "ALERT_SMTP_TO": "ops@example.test",
    }


def test_five_failures_in_a_window_give_one_alert_per_channel_then_one_resolve(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    tmp_path: Path,
    receivers: tuple[Receiver, Receiver, Mailbox, LoopbackSMTP],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    webhook, slack, mailbox, smtp = receivers
    # Two workers: each sees the failures it runs, the Redis token lets only one send.
    env = alert_env(tmp_path, webhook, slack, smtp.port)
    start_worker([c.MAINTENANCE_QUEUE], env={**env, "METRICS_PORT": str(free_port())})
    start_worker([c.MAINTENANCE_QUEUE], env={**env, "METRICS_PORT": str(free_port())})
    results = [
        producer_app.send_task(
            "tests.broken_until_fixed", args=[f"p{i}"], queue=c.MAINTENANCE_QUEUE
        )
        for i in range(10)
    ]
    for result in results:
        result.get(timeout=30, propagate=False)

    firing = webhook.wait(1)
    wait_for(lambda: len(slack.hits) >= 1 and len(mailbox.messages) >= 1, timeout=10)
    first = json.loads(firing[0].body)
    assert firing[0].signature_valid
    assert first["rule"] == "broken_parser" and first["state"] == "firing"
    assert "failures of tests.broken_until_fixed" in first["message"]
    subject = str(mailbox.messages[0][1]["Subject"])
    assert "broken_parser" in subject and "firing" in subject

    # The failures age out of the 4 s window: one resolve per channel, and nothing more.
    resolved = webhook.wait(2, timeout=20)
    assert json.loads(resolved[1].body)["state"] == "resolved"
    wait_for(lambda: len(slack.hits) >= 2 and len(mailbox.messages) >= 2, timeout=10)
    time.sleep(2.0)  # a second worker or a tick must not send again: watch for a while
    assert [json.loads(h.body)["state"] for h in webhook.hits] == ["firing", "resolved"]
    assert len(slack.hits) == 2
    assert len(mailbox.messages) == 2


def test_a_dead_channel_does_not_delay_the_others(
    producer_app: WorkerApp,
    tmp_path: Path,
    receivers: tuple[Receiver, Receiver, Mailbox, LoopbackSMTP],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    webhook, slack, _, _ = receivers
    # An SMTP "server" that accepts connections and never speaks: sends hang until timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        env = alert_env(tmp_path, webhook, slack, silent.getsockname()[1])
        env["ALERT_CHANNEL_TIMEOUT"] = "5"
        start_worker([c.MAINTENANCE_QUEUE], env=env)
        started = time.monotonic()
        for i in range(5):
            producer_app.send_task(
                "tests.broken_until_fixed", args=[f"d{i}"], queue=c.MAINTENANCE_QUEUE
            )
        webhook.wait(1, timeout=20)
        slack.wait(1, timeout=20)
        assert time.monotonic() - started < 5  # well before the dead channel's timeout
    finally:
        silent.close()
