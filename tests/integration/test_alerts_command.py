"""``celery ... alerts list|rules|test`` and the start-up check of the rules file."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.support.alert_servers import WEBHOOK_SECRET, Receiver
from tests.support.worker import worker_env

pytestmark = pytest.mark.integration

RULES = """rules:
  - name: parser_failures
    condition: task_failure
    threshold: 3
    window: 5m
    channels: [webhook, log]
    message_template: "{count} failures of {task_name}"
"""


def alerts(redis_url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "personal_assistant.workers.celery_app",
            "alerts",
            *args,
        ],
        env=worker_env(redis_url, env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_alerts_test_sends_a_signed_test_notification_through_the_rules_channels(
    redis_url: str,
    tmp_path: Path,
    webhook: Receiver,
) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES)
    env = {
        "ALERTING_ENABLED": "true",
        "ALERT_RULES_FILE": str(rules),
        "ALERT_WEBHOOK_URL": webhook.url,
        "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    sent = alerts(redis_url, env, "test", "parser_failures")
    assert sent.returncode == 0, sent.stderr
    assert "webhook: sent" in sent.stdout and "log: sent" in sent.stdout
    hit = webhook.wait(1)[0]
    body = json.loads(hit.body)
    assert body["message"].startswith("TEST: 3 failures of")
    expected = hmac.new(WEBHOOK_SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hit.signature_valid and expected in hit.headers["X-Signature-256"]
    unknown = alerts(redis_url, env, "test", "nope")
    assert unknown.returncode != 0
    assert "parser_failures" in unknown.stderr


def test_alerts_list_shows_the_notifications_sent_newest_first(
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    for i, state in enumerate(("firing", "resolved")):
        redis_client.lpush(
            "pa:alerts:history",
            json.dumps(
                {
                    "rule": "r1",
                    "state": state,
                    "severity": "critical",
                    "channels": ["log"],
                    "message": f"message {i}",
                    "timestamp": 1764345600.0 + i,
                }
            ),
        )
    listed = alerts(redis_url, {}, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    states = [json.loads(line)["state"] for line in listed.stdout.splitlines()]
    assert states == ["resolved", "firing"]


def test_a_bad_rules_file_stops_start_up_naming_the_line_and_field(
    redis_url: str,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text(RULES.replace("condition: task_failure", "condition: task_failures"))
    env = {"ALERTING_ENABLED": "true", "ALERT_RULES_FILE": str(rules)}
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "personal_assistant.workers.celery_app",
            "inspect",
            "ping",
        ],
        env=worker_env(redis_url, env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "line 3" in refused.stderr and "field 'condition'" in refused.stderr
    assert "Traceback" not in refused.stderr
