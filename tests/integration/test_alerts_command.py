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

from tests.support.alert_servers import WEBHOOK_SECRET, LoopbackSMTP, Mailbox, Receiver
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


def alerts(
    redis_url: str, env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``celery ... alerts ARGS`` with ``env``, none of this process's ALERT* variables."""
    process_env = {
        k: v for k, v in worker_env(redis_url, env).items() if k in env or not k.startswith("ALERT")
    }
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
        env=process_env,
        cwd=cwd,
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
    signed = hit.headers["X-Alert-Timestamp"].encode() + b"." + hit.body
    expected = hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hit.signature_valid and hit.headers["X-Signature-256"] == f"sha256={expected}"
    unknown = alerts(redis_url, env, "test", "parser_failure")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines() == [
        "Error: no rule named 'parser_failure' (did you mean 'parser_failures'?); "
        "known: parser_failures"
    ]


SAMPLE_RULES = """rules:
  - name: everything
    condition: task_failure
    threshold: 3
    window: 5m
    channels: [webhook]
    group_by: [task_name]
    message_template: >-
      {count} failures of {task_name} on {queue} ({hostname}) in {window}, {rate}% failing:
      {error}; first {started_at}; tenant {tenant}; {depth} waiting; p95 {p95:.2f}s
  - name: lost_workers
    condition: worker_offline
    threshold: 1
    window: 1m
    channels: [webhook]
    labels: {queue: ai_tasks}
    message_template: "{value} worker(s) of {queue} silent: {workers}"
"""


def test_alerts_test_fills_every_placeholder_with_a_sample_value(
    redis_url: str, tmp_path: Path, webhook: Receiver
) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(SAMPLE_RULES)
    env = {
        "ALERTING_ENABLED": "true",
        "ALERT_RULES_FILE": str(rules),
        "ALERT_WEBHOOK_URL": webhook.url,
        "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }

    sent = alerts(redis_url, env, "test", "everything")
    lost = alerts(redis_url, env, "test", "lost_workers", "--json")

    assert sent.returncode == 0, sent.stderr
    first, second = (json.loads(hit.body) for hit in webhook.wait(2))
    message = first["message"] if first["rule"] == "everything" else second["message"]
    assert message == (
        "TEST: 3 failures of personal_assistant.workers.tasks.email_tasks.send_email on "
        "email_tasks (celery@sample-host) in 5m, 20% failing: SampleError: a sample error sent "
        "by `alerts test`; first " + message.split("; first ")[1].split(";")[0] + "; tenant "
        "{tenant?}; 3 waiting; p95 3.00s"
    )
    assert message.count("?}") == 1  # only the placeholder that no alert carries
    assert sent.stdout.splitlines() == [
        f"message: {message}",
        "note: no alert has {tenant}; real messages show it as {name?}",
        "webhook: sent",
    ]
    assert lost.returncode == 0, lost.stderr
    data = json.loads(lost.stdout)
    assert data["message"] == "TEST: 1 worker(s) of ai_tasks silent: celery@sample-host"
    assert data["channels"] == {"webhook": "sent"}
    assert data["unknown_placeholders"] == []
    assert data["fields"]["test"] is True


def test_alerts_rules_says_first_that_alerting_is_off_and_how_to_turn_it_on(
    redis_url: str,
) -> None:
    off = alerts(redis_url, {}, "rules")
    on = alerts(redis_url, {"ALERTING_ENABLED": "true"}, "rules")
    off_json = alerts(redis_url, {}, "rules", "--json")

    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines()[0] == (
        "alerting is off (ALERTING_ENABLED=false, the default): set ALERTING_ENABLED=true"
    )
    assert "task_failures" in off.stdout
    assert on.returncode == 0, on.stderr
    assert "alerting is off" not in on.stdout
    assert "task_failures" in on.stdout
    data = json.loads(off_json.stdout)
    assert data["alerting_enabled"] is False
    by_name = {rule["name"]: rule for rule in data["rules"]}
    assert set(by_name) == {"task_failures", "queue_backlog", "worker_offline"}
    assert by_name["task_failures"]["placeholders"] == ["count", "task_name", "window", "error"]
    assert (by_name["task_failures"]["window_s"], by_name["task_failures"]["channels"]) == (
        60.0,
        ["log"],
    )


def test_alerts_test_sends_through_the_channels_of_a_dotenv_file_in_the_working_directory(
    redis_url: str,
    tmp_path: Path,
    webhook: Receiver,
) -> None:
    mailbox = Mailbox()
    smtp = LoopbackSMTP(mailbox)
    smtp.start()
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES.replace("channels: [webhook, log]", "channels: [webhook, email, log]"))
    (tmp_path / ".env").write_text(
        "ALERTING_ENABLED=true\n"
        f"ALERT_RULES_FILE={rules}\n"
        "ALERT_SMTP_HOST=127.0.0.1\n"
        f"ALERT_SMTP_PORT={smtp.port}\n"
        "ALERT_SMTP_FROM=alerts@example.org\n"
        "ALERT_SMTP_TO=ops@example.org\n"
        f"ALERT_WEBHOOK_URL={webhook.url}/from-dotenv\n"
        f"ALERT_WEBHOOK_SECRET={WEBHOOK_SECRET}\n"
    )
    try:
        sent = alerts(redis_url, {}, "test", "parser_failures", cwd=tmp_path)
        delivered = mailbox.received.wait(10)
    finally:
        smtp.stop()

    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[1:] == ["webhook: sent", "email: sent", "log: sent"]
    (hit,) = webhook.wait(1)
    assert hit.path == "/from-dotenv" and hit.signature_valid
    assert delivered
    ((envelope, message),) = mailbox.messages
    assert envelope.rcpt_tos == ["ops@example.org"]
    assert message["Subject"].endswith("parser_failures: firing")


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
    redis_client.lpush("pa:alerts:history", "{not json")
    listed = alerts(redis_url, {}, "list", "--json")
    table = alerts(redis_url, {}, "list")
    assert listed.returncode == 0, listed.stderr
    states = [json.loads(line)["state"] for line in listed.stdout.splitlines()]
    assert states == ["resolved", "firing"]
    assert listed.stderr == "1 unreadable entry of pa:alerts:history skipped\n"
    assert table.returncode == 0, table.stderr
    assert "resolved, critical" in table.stdout and "message 1" in table.stdout


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


SHORT_SECRET = "short-secret-17b"  # noqa: S105 - a test secret, too short on purpose
ALIAS_RULES = RULES.replace("channels: [webhook, log]", "channels: &c [log]") + "    labels: *c\n"
START_UP_REFUSALS = [
    # (what, environment beyond ALERTING_ENABLED, words stderr must hold)
    ("a short webhook secret",
     {"ALERT_WEBHOOK_URL": "https://hooks.example.org/x", "ALERT_WEBHOOK_SECRET": SHORT_SECRET},
     "ALERT_WEBHOOK_SECRET: the webhook secret must be at least 32 bytes"),
    ("an SMTP login without TLS",
     {"ALERT_SMTP_HOST": "127.0.0.1", "ALERT_SMTP_FROM": "a@example.org",
      "ALERT_SMTP_TO": "b@example.org", "ALERT_SMTP_USER": "u", "ALERT_SMTP_PASSWORD": "pw-17b"},
     "ALERT_SMTP_USER/ALERT_SMTP_PASSWORD need ALERT_SMTP_STARTTLS=true or ALERT_SMTP_SSL=true"),
    ("Slack over plain http",
     {"ALERT_SLACK_WEBHOOK_URL": "http://hooks.slack.example/services/T/B/tok3n"},
     "ALERT_SLACK_WEBHOOK_URL: Slack webhook: URL http://hooks.slack.example/**** must be https"),
    ("an alias in the rules file", {"ALERT_RULES_FILE": "alias.yaml"},
     "alias.yaml line 8: aliases (*name) are not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "words"),
    [case[1:] for case in START_UP_REFUSALS],
    ids=[case[0] for case in START_UP_REFUSALS],
)
def test_unsafe_alerting_settings_stop_start_up_with_one_line(
    redis_url: str, tmp_path: Path, env: dict[str, str], words: str
) -> None:
    if "ALERT_RULES_FILE" in env:
        (tmp_path / "alias.yaml").write_text(ALIAS_RULES)
        env = {"ALERT_RULES_FILE": str(tmp_path / "alias.yaml")}
    refused = alerts(redis_url, {"ALERTING_ENABLED": "true", **env}, "rules")
    assert refused.returncode != 0
    assert words in refused.stderr
    assert "Traceback" not in refused.stderr
    for secret in (SHORT_SECRET, "pw-17b", "tok3n"):
        assert secret not in refused.stderr
