"""The Alertmanager channel: the alert it pushes (labels lined up with the Prometheus rules,
annotations, firing and resolved times), how it sends it (to a real loopback HTTP server), its
credentials (never shown, never over plain http to another host) and its settings."""

from __future__ import annotations

import base64
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from personal_assistant.workers.alerting.channels.alertmanager import (
    ALERTNAMES,
    LABEL_NAMES,
    SOURCE,
    TEST_ALERT_TTL_S,
    AlertmanagerChannel,
    alert_labels,
)
from personal_assistant.workers.alerting.channels.base import ChannelError, Notification
from personal_assistant.workers.alerting.channels.config import channels_from_settings
from personal_assistant.workers.alerting.rule import CONDITIONS
from personal_assistant.workers.config import AlertChannelSettings, ConfigError
from tests.support.alert_channels import HttpReceiver

RULES_FILE = Path(__file__).parents[4] / "docker" / "monitoring" / "alert_rules.yml"
PASSWORD = "am-pa55word-never-shown"  # noqa: S105 - a test secret
TOKEN = "am-bearer-token-never-shown"  # noqa: S105 - a test secret
NOW = 1_700_000_000.0
STARTED = "2023-11-14T22:10:00+00:00"  # 3 min 20 s before NOW


def backlog(state: str = "firing", **changes: Any) -> Notification:
    """A queue_backlog notification as the manager sends it (grouped by queue)."""
    fields = {"condition": "queue_backlog", "started_at": STARTED, "queue": "email", "value": 1500}
    values: dict[str, Any] = {
        "rule": "queue_backlog",
        "state": state,
        "severity": "warning",
        "message": "queue email holds 1500 messages",
        "labels": {"queue": "email"},
        "fields": fields,
        "fingerprint": "fp-backlog",
        "timestamp": NOW,
    }
    return Notification(**(values | changes))


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# --- The alert ------------------------------------------------------------------------------


def test_a_firing_backlog_alert_carries_the_prometheus_rule_labels() -> None:
    alert = AlertmanagerChannel("http://alertmanager:9093").alert(backlog(), now=NOW + 2)

    assert alert["labels"] == {
        "alertname": "CeleryQueueBacklog",
        "queue_name": "email",
        "rule": "queue_backlog",
        "severity": "warning",
        "source": SOURCE,
    }
    assert alert["annotations"]["summary"] == "queue email holds 1500 messages"
    assert alert["annotations"]["description"].startswith("queue email holds 1500 messages\n\n")
    assert "value: 1500" in alert["annotations"]["description"]
    assert alert["startsAt"] == "2023-11-14T22:10:00.000Z"
    # Active until the resolve, or a reminder, or an hour after the last push.
    assert alert["endsAt"] == rfc3339(NOW + 2 + 3600)


def test_the_resolve_carries_the_same_labels_and_ends_when_it_resolved() -> None:
    channel = AlertmanagerChannel("http://alertmanager:9093")
    firing = channel.alert(backlog(), now=NOW)
    resolved = channel.alert(
        backlog(
            "resolved", message="RESOLVED: queue email holds 1500 messages", timestamp=NOW + 60
        ),
        now=NOW + 61,  # sent a second after it resolved (a retry, say)
    )

    assert resolved["labels"] == firing["labels"]
    assert resolved["startsAt"] == firing["startsAt"]
    assert resolved["endsAt"] == rfc3339(NOW + 60)
    assert resolved["annotations"]["summary"].startswith("RESOLVED: ")


def test_a_resolve_stamped_in_the_future_still_ends_now() -> None:
    alert = AlertmanagerChannel("http://am:9093").alert(
        backlog("resolved", timestamp=NOW + 500), now=NOW
    )

    assert alert["endsAt"] == rfc3339(NOW)


def test_the_start_never_comes_after_the_end() -> None:
    late_start = backlog(
        "resolved", fields={"condition": "queue_backlog", "started_at": "2030-01-01T00:00:00+00:00"}
    )

    alert = AlertmanagerChannel("http://am:9093").alert(late_start, now=NOW)

    assert alert["startsAt"] == alert["endsAt"] == rfc3339(NOW)


def test_without_a_start_time_the_alert_starts_at_its_notification() -> None:
    alert = AlertmanagerChannel("http://am:9093").alert(
        backlog(fields={"condition": "queue_backlog"}), now=NOW
    )

    assert alert["startsAt"] == rfc3339(NOW)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_every_rule_condition_has_an_alertname(condition: str) -> None:
    note = backlog(fields={"condition": condition})

    assert alert_labels(note)["alertname"] == ALERTNAMES[condition]


def test_the_alertnames_shared_with_prometheus_name_rules_of_the_shipped_rules_file() -> None:
    shipped = set(re.findall(r"^\s*- alert: (\w+)$", RULES_FILE.read_text(), re.MULTILINE))
    shared = {"CeleryTaskFailureRateHigh", "CeleryTaskRuntimeP95High", "CeleryQueueBacklog",
              "CeleryWorkerDown"}  # fmt: skip

    assert shared <= shipped
    assert shared <= set(ALERTNAMES.values())
    # The two counts the Prometheus rules do not watch have names of their own.
    assert not (set(ALERTNAMES.values()) - shared) & shipped


def test_the_label_names_are_those_the_prometheus_rules_aggregate_by() -> None:
    text = RULES_FILE.read_text()
    by_clauses = " ".join(re.findall(r"by \(([^)]*)\)", text))

    for label in LABEL_NAMES.values():
        assert label in by_clauses, label


def test_a_notification_of_an_unknown_condition_is_named_after_its_rule() -> None:
    labels = alert_labels(backlog(rule="nightly_export", fields={}))

    assert labels["alertname"] == "nightly_export"
    assert labels["rule"] == "nightly_export"


def test_group_keys_take_the_metric_label_names_and_the_celery_node_prefix_goes() -> None:
    note = backlog(
        labels={"task_name": "email.send", "queue": "email", "hostname": "celery@worker-3"},
        fields={"condition": "task_failure"},
    )

    labels = alert_labels(note)

    assert labels["name"] == "email.send"
    assert labels["queue_name"] == "email"
    assert labels["hostname"] == "worker-3"
    assert not {"task_name", "queue"} & set(labels)


@pytest.mark.parametrize(
    ("node", "hostname"),
    [("celery@web-1", "web-1"), ("email@web-1", "email@web-1"), ("web-1", "web-1")],
)
def test_only_a_leading_celery_node_prefix_leaves_the_hostname(node: str, hostname: str) -> None:
    # As celery_worker_up{hostname} names the worker, so a silence on one matches both.
    note = backlog(labels={"hostname": node}, fields={"condition": "worker_offline"})

    assert alert_labels(note)["hostname"] == hostname


def test_rule_labels_are_kept_made_valid_and_cannot_override_ours() -> None:
    note = backlog(
        labels={"team": "mail", "on-call": "yes", "9lives": "x", "source": "spoof", "empty": ""}
    )

    labels = alert_labels(note)

    assert labels["team"] == "mail"
    assert labels["on_call"] == "yes"
    assert labels["_9lives"] == "x"
    assert labels["source"] == SOURCE
    assert "empty" not in labels


def test_the_latest_failing_task_of_a_reminder_does_not_change_the_labels() -> None:
    first = backlog(labels={}, fields={"condition": "task_failure", "task_name": "a.task"})
    reminder = backlog(labels={}, fields={"condition": "task_failure", "task_name": "b.task"})

    assert alert_labels(first) == alert_labels(reminder)
    assert "name" not in alert_labels(first)


def test_a_test_notification_is_labelled_as_one_and_ends_by_itself() -> None:
    note = backlog(fields={"condition": "queue_backlog", "test": True}, message="TEST: queue")

    alert = AlertmanagerChannel("http://am:9093").alert(note, now=NOW)

    assert alert["labels"]["test"] == "true"
    assert alert["labels"]["alertname"] == "CeleryQueueBacklog"
    assert alert["endsAt"] == rfc3339(NOW + TEST_ALERT_TTL_S)


def test_the_body_is_a_strict_json_list_of_one_alert_whatever_the_fields() -> None:
    note = backlog(
        fields={"condition": "performance_degradation", "p95": math.nan, "ids": ["a", "b"]},
        message="x" * 5000 + "\nsecond line",
    )

    body = json.loads(AlertmanagerChannel("http://am:9093").body(note, now=NOW))

    assert isinstance(body, list) and len(body) == 1
    (alert,) = body
    assert "\n" not in alert["annotations"]["summary"]
    assert len(alert["annotations"]["summary"]) == 300
    assert "p95: nan" in alert["annotations"]["description"]
    assert "ids: a, b" in alert["annotations"]["description"]


# --- Sending --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/api/v2/alerts"])
def test_it_posts_json_to_the_v2_alerts_api_under_the_base_url(
    http_receiver: HttpReceiver, suffix: str
) -> None:
    AlertmanagerChannel(http_receiver.url + "/am" + suffix).send(backlog())

    (request,) = http_receiver.wait_for(1)
    assert request.path == "/am/api/v2/alerts"
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers
    assert json.loads(request.body)[0]["labels"]["alertname"] == "CeleryQueueBacklog"


def test_basic_auth_goes_in_the_authorization_header(http_receiver: HttpReceiver) -> None:
    AlertmanagerChannel(http_receiver.url, username="alerts", password=PASSWORD).send(backlog())

    (request,) = http_receiver.wait_for(1)
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"alerts:{PASSWORD}"


def test_a_bearer_token_goes_in_the_authorization_header(http_receiver: HttpReceiver) -> None:
    AlertmanagerChannel(http_receiver.url, token=TOKEN).send(backlog())

    (request,) = http_receiver.wait_for(1)
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_refused_login_is_final_and_shows_no_credential(http_receiver: HttpReceiver) -> None:
    http_receiver.status = 401
    http_receiver.reply = f"Unauthorized {PASSWORD} {TOKEN}".encode()
    channel = AlertmanagerChannel(http_receiver.url, username="alerts", password=PASSWORD)

    with pytest.raises(ChannelError) as caught:
        channel.send(backlog())

    assert not caught.value.retryable
    assert "answered HTTP 401" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(channel)
    assert "password=****" in repr(channel)


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (429, True), (503, True)])
def test_an_error_answer_is_retried_only_when_sending_again_can_help(
    http_receiver: HttpReceiver, status: int, retryable: bool
) -> None:
    http_receiver.status = status

    with pytest.raises(ChannelError) as caught:
        AlertmanagerChannel(http_receiver.url).send(backlog())

    assert caught.value.retryable is retryable


def test_a_token_is_never_shown() -> None:
    channel = AlertmanagerChannel("https://am.example.org", token=TOKEN)

    assert TOKEN not in repr(channel)
    assert "token=****" in repr(channel)


@pytest.mark.parametrize(("username", "password", "token"), [("alerts", PASSWORD, None),
                                                         (None, None, TOKEN)])  # fmt: skip
def test_credentials_over_plain_http_to_another_host_are_refused(
    username: str | None, password: str | None, token: str | None
) -> None:
    with pytest.raises(ValueError, match="must be https") as caught:
        AlertmanagerChannel(
            "http://alertmanager:9093", username=username, password=password, token=token
        )

    assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)
    # Without credentials, or to loopback, plain http is fine.
    AlertmanagerChannel("http://alertmanager:9093")
    AlertmanagerChannel("http://127.0.0.1:9093", username=username, password=password, token=token)


@pytest.mark.parametrize(
    "url", ["ftp://am:9093", "http://", "http://am:9093/?x=1", "http://user:pw@am:9093", "am"]
)
def test_a_url_that_is_not_a_base_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="Alertmanager"):
        AlertmanagerChannel(url)


# --- Settings -------------------------------------------------------------------------------


def test_the_url_variable_alone_enables_the_channel() -> None:
    settings = AlertChannelSettings.from_variables(
        {"ALERT_ALERTMANAGER_URL": "http://alertmanager:9093", "ALERT_CHANNEL_TIMEOUT": "2"}
    )

    channels = channels_from_settings(settings)

    assert sorted(channels) == ["alertmanager", "log"]
    channel = channels["alertmanager"]
    assert isinstance(channel, AlertmanagerChannel)
    assert repr(channel) == "AlertmanagerChannel(http://alertmanager:9093)"
    assert channel.timeout == 2.0
    assert channel.resolve_timeout == 3600.0


def test_credentials_and_the_resolve_timeout_come_from_their_variables() -> None:
    settings = AlertChannelSettings.from_variables(
        {
            "ALERT_ALERTMANAGER_URL": "https://alertmanager.example.org",
            "ALERT_ALERTMANAGER_USERNAME": "alerts",
            "ALERT_ALERTMANAGER_PASSWORD": PASSWORD,
            "ALERT_ALERTMANAGER_RESOLVE_TIMEOUT": "7200",
        }
    )

    channel = channels_from_settings(settings)["alertmanager"]

    assert isinstance(channel, AlertmanagerChannel)
    assert channel.username == "alerts"
    assert channel.resolve_timeout == 7200.0
    for shown in (repr(settings), json.dumps(settings.safe_dict()), repr(channel)):
        assert PASSWORD not in shown


URL, USER, PASS, TOK, RESOLVE = (
    AlertChannelSettings.variable(f"alertmanager_{name}")
    for name in ("url", "username", "password", "token", "resolve_timeout")
)
BAD_SETTINGS = [
    # (id, variables, words of the one-line error)
    ("token-over-http", {URL: "http://am:9093", TOK: TOKEN},
     f"{URL}: Alertmanager: URL http://am:9093 must be https"),
    ("user-without-password", {URL: "https://am", USER: "a"},
     f"{PASS} is required when {USER} is set"),
    ("token-and-basic", {URL: "https://am", USER: "a", PASS: PASSWORD, TOK: TOKEN},
     "exclude each other"),
    ("token-without-url", {TOK: TOKEN}, f"{URL} is required when {TOK} is set"),
    ("credentials-in-url", {URL: f"http://a:{PASSWORD}@am:9093"}, "holds credentials"),
    ("not-http", {URL: "ftp://am"}, "must be http or https"),
    ("resolve-timeout", {URL: "http://am:9093", RESOLVE: "0"},
     f"{RESOLVE}: must be a positive number of seconds"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("variables", "reason"), [c[1:] for c in BAD_SETTINGS], ids=[c[0] for c in BAD_SETTINGS]
)
def test_a_bad_alertmanager_setting_is_refused_in_one_line_without_secrets(
    variables: dict[str, str], reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        AlertChannelSettings.from_variables(variables)

    message = str(caught.value)
    assert reason in message
    assert "\n" not in message
    assert PASSWORD not in message and TOKEN not in message
