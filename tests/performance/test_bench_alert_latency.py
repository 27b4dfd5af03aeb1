"""From a failing task's end to the webhook's receipt: p99 under 2 seconds.

A worker with alerting on and a rule that fires on one failure (and resolves half a second
later); the task records the moment it fails, the receiving server the moment the signed
webhook arrives. Sequential samples, each waiting for the alert and its resolve.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.performance.conftest import Figure, record
from tests.support.alert_servers import WEBHOOK_SECRET, Receiver
from tests.support.redis_server import free_port
from tests.support.worker import WorkerProcess

SAMPLES = 60
RULES = """rules:
  - name: any_failure
    condition: task_failure
    threshold: 1
    window: 0.5s
    cooldown: 1h
    channels: [webhook]
    message_template: "{task_name} failed"
"""


def test_alert_latency_from_failure_to_webhook_p99_under_two_seconds(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    tmp_path: Path,
    webhook: Receiver,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    start_worker(
        [c.MAINTENANCE_QUEUE],
        env={
            "ALERTING_ENABLED": "true",
            "ALERT_RULES_FILE": str(rules),
            "ALERT_EVAL_INTERVAL": "0.1",
            "METRICS_PORT": str(free_port()),
            "ALERT_WEBHOOK_URL": webhook.url,
            "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )
    latencies = []
    for i in range(SAMPLES):
        seen = len(webhook.hits)
        producer_app.send_task("tests.fail_now", args=[f"k{i}"], queue=c.MAINTENANCE_QUEUE)
        hits = webhook.wait(seen + 2, timeout=30)  # the alert, then its resolve
        firing = [h for h in hits[seen:] if json.loads(h.body)["state"] == "firing"]
        assert len(firing) == 1 and firing[0].signature_valid
        failed_at = float(redis_client.get(f"failed_at:k{i}") or 0)
        latencies.append(firing[0].received_at - failed_at)
    in_order = [[i + 1, x * 1000] for i, x in enumerate(latencies)]
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    record(
        Figure(
            benchmark="alert latency",
            measure="p99, failure -> webhook",
            ours=p99 * 1000,
            unit="ms",
            target="< 2000 ms",
            met=p99 < 2.0,
            detail=(
                f"failure -> webhook ({SAMPLES} samples): p50 {p50 * 1000:.0f} ms, "
                f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
            ),
            series={"latency": in_order},
            x_label="sample",
        )
    )
    assert p99 < 2.0
