"""The notification every channel sends, and the channel protocol every channel satisfies."""

from __future__ import annotations

import json
import time

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.channels.base import Channel
from personal_assistant.workers.alerting.channels.email import EmailChannel
from personal_assistant.workers.alerting.channels.webhooks import (
    LogChannel,
    SlackChannel,
    WebhookChannel,
)
from tests.support.alert_channels import SECRET, HttpReceiver, note


def test_notification_to_json_is_json_and_complete() -> None:
    n = note(fields={"when": time, "count": 3})
    data = n.to_json()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {
        "rule",
        "state",
        "severity",
        "message",
        "labels",
        "fields",
        "fingerprint",
        "timestamp",
    }
    assert data["fields"]["count"] == 3
    assert isinstance(data["fields"]["when"], str)  # not JSON: turned into its str
    assert n.title == "[CRITICAL] CeleryWorkerDown: firing"


def test_notification_json_is_strict_json() -> None:
    n = note(fields={"p95": float("nan"), "nested": {"inf": float("inf"), "ids": (1, 2)}})
    data = n.to_json()
    assert data["fields"] == {"p95": "nan", "nested": {"inf": "inf", "ids": [1, 2]}}
    body = WebhookChannel("https://hooks.example.org/x", SECRET).body(n)

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    assert json.loads(body, parse_constant=refuse) == data


def test_notification_rejects_unknown_state() -> None:
    with pytest.raises(ValueError, match="firing"):
        note(state="pending")


def test_a_notification_message_over_the_cap_is_cut_with_a_marker() -> None:
    n = note(message="RESOLVED: " + "x" * (5 * c.ALERT_MESSAGE_MAX_CHARS))
    assert len(n.message) == c.ALERT_MESSAGE_MAX_CHARS
    assert n.message.startswith("RESOLVED: xxx")
    assert n.message.endswith(f"[message cut at {c.ALERT_MESSAGE_MAX_CHARS} characters]")


def test_channels_satisfy_the_protocol(http_receiver: HttpReceiver) -> None:
    channels: list[Channel] = [
        LogChannel(),
        EmailChannel("127.0.0.1", 25, "a@example.org", ["b@example.org"]),
        SlackChannel(http_receiver.url),
        WebhookChannel(http_receiver.url, SECRET),
    ]
    assert all(isinstance(c, Channel) for c in channels)
    assert [c.name for c in channels] == ["log", "email", "slack", "webhook"]
