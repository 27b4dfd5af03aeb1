"""The Alertmanager channel against a real Prometheus Alertmanager (Debian's package).

Alerts go the production way: the in-process rule engine (``AlertManager``) decides, the
``AlertSender`` turns its alerts into notifications, the ``ChannelDispatcher`` sends them through
the channel built from ``ALERT_ALERTMANAGER_*`` variables, and a real ``prometheus-alertmanager``
(no clustering, on a free loopback port) takes them, shows them in its v2 API, routes them to a
webhook receiver on loopback, resolves them, silences them, and checks basic auth.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from personal_assistant.workers.alerting.channels.alertmanager import SOURCE
from personal_assistant.workers.alerting.channels.base import ChannelError, Notification
from personal_assistant.workers.alerting.channels.config import channels_from_settings
from personal_assistant.workers.alerting.delivery import ChannelDispatcher
from personal_assistant.workers.alerting.evaluator import AlertSender
from personal_assistant.workers.alerting.manager import AlertManager, AlertRule
from personal_assistant.workers.config import AlertChannelSettings
from tests.support.alert_servers import Receiver
from tests.support.alertmanager import (
    ALERTMANAGER_BINARY,
    GROUP_INTERVAL_S,
    AlertmanagerProcess,
    alertmanager_binary,
    notified_alerts,
)
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        alertmanager_binary() is None,
        reason=f"{ALERTMANAGER_BINARY} is missing: `make system-deps` (or `apt-get install"
        " prometheus-alertmanager`) installs it",
    ),
]

AM_PASSWORD = "alertmanager-pa55word-never-logged"  # noqa: S105 - a test secret


@pytest.fixture(scope="module")
def sink() -> Iterator[Receiver]:
    """The webhook receiver Alertmanager routes every alert to."""
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def alertmanager(
    sink: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AlertmanagerProcess]:
    """One Alertmanager for the module; each test uses labels of its own."""
    process = AlertmanagerProcess(tmp_path_factory.mktemp("alertmanager"), sink).start()
    yield process
    process.stop()


class InProcessAlerts:
    """The production path from a rule to Alertmanager, with the channel from the variables."""

    def __init__(self, variables: Mapping[str, str], *rules: AlertRule) -> None:
        channels = channels_from_settings(AlertChannelSettings.from_variables(variables))
        self.failures: list[str] = []
        self.dispatcher = ChannelDispatcher(
            channels, retries=1, backoff=0.05, failure_counter=self.failures.append
        )
        self.manager = AlertManager(channels=sorted(channels))
        for rule in rules:
            self.manager.add_rule(rule)
        sent = Counter("alerts_sent", "sent", ["rule", "state"], registry=CollectorRegistry())
        self.manager.notifier = AlertSender(
            None, self.dispatcher, {rule.name: rule for rule in rules}, sent
        )

    def check(self, metrics: Mapping[str, object]) -> list[str]:
        """Evaluate ``metrics``, wait until the channel has sent; the states sent."""
        alerts = self.manager.check_alerts(metrics)
        assert self.dispatcher.flush(timeout=15)
        assert self.failures == []
        return [alert.state for alert in alerts]

    def close(self) -> None:
        self.dispatcher.close()


def rule(name: str, condition: str, threshold: float, group_by: list[str]) -> AlertRule:
    return AlertRule(
        name=name,
        condition=condition,
        threshold=threshold,
        window=timedelta(minutes=5),
        channels=["alertmanager"],
        message_template="{value} over {threshold}",
        severity="critical" if condition == "worker_offline" else "warning",
        group_by=group_by,
    )


def sent_to_sink(sink: Receiver, **labels: str) -> list[dict[str, object]]:
    """The alerts Alertmanager notified the sink of whose labels include ``labels``."""
    return [
        alert
        for alert in notified_alerts(sink)
        if isinstance(alert["labels"], dict) and labels.items() <= alert["labels"].items()
    ]


def test_a_backlog_alert_fires_routes_and_resolves_in_alertmanager(
    alertmanager: AlertmanagerProcess, sink: Receiver
) -> None:
    alerts = InProcessAlerts(
        {"ALERT_ALERTMANAGER_URL": alertmanager.url},
        rule("backlog_routed", "queue_backlog", 1000, ["queue"]),
    )
    try:
        assert alerts.check({"queues": {"email": 1500, "ai": 3}}) == ["firing"]

        # Alertmanager holds it with the labels of the Prometheus rule CeleryQueueBacklog.
        (held,) = wait_for(lambda: alertmanager.alerts(rule="backlog_routed"), timeout=10)
        expected = {
            "alertname": "CeleryQueueBacklog",
            "queue_name": "email",
            "rule": "backlog_routed",
            "severity": "warning",
            "source": SOURCE,
        }
        assert held["labels"] == expected
        assert held["status"]["state"] == "active"
        assert held["annotations"]["summary"] == "1500 over 1000"
        assert [r["name"] for r in held["receivers"]] == ["sink"]

        # ...and routes it to the receiver.
        (notified,) = wait_for(lambda: sent_to_sink(sink, rule="backlog_routed"), timeout=10)
        assert notified["labels"] == expected
        assert notified["status"] == notified["group_status"] == "firing"

        # The queue drains: the resolve ends the same alert.
        assert alerts.check({"queues": {"email": 10, "ai": 0}}) == ["resolved"]
        wait_for(lambda: not alertmanager.alerts(rule="backlog_routed"), timeout=10)
        resolved = wait_for(
            lambda: [
                a
                for a in sent_to_sink(sink, rule="backlog_routed")
                if a["group_status"] == "resolved"
            ],
            timeout=10,
        )
        assert resolved[0]["labels"] == expected
        assert resolved[0]["status"] == "resolved"
        assert resolved[0]["fingerprint"] == notified["fingerprint"]
    finally:
        alerts.close()


def test_a_silence_on_our_labels_suppresses_the_alert(
    alertmanager: AlertmanagerProcess, sink: Receiver
) -> None:
    silence = alertmanager.silence(
        "maintenance of worker-quiet",
        alertname="CeleryWorkerDown",
        source=SOURCE,
        hostname="worker-quiet",
    )
    alerts = InProcessAlerts(
        {"ALERT_ALERTMANAGER_URL": alertmanager.url},
        rule("workers_silenced", "worker_offline", 1, ["hostname"]),
    )
    try:
        # The heartbeat registry names workers as Celery does; the labels drop "celery@".
        down = {"celery@worker-quiet": False, "celery@worker-loud": False, "celery@ok": True}
        assert alerts.check({"workers": down}) == ["firing", "firing"]

        def states() -> dict[str, tuple[str, list[str]]]:
            return {
                a["labels"]["hostname"]: (a["status"]["state"], a["status"]["silencedBy"])
                for a in alertmanager.alerts(rule="workers_silenced")
            }

        wait_for(lambda: len(states()) == 2, timeout=10)
        assert states() == {
            "worker-quiet": ("suppressed", [silence]),
            "worker-loud": ("active", []),
        }
        # The loud one reaches the receiver; the silenced one, flushed at the same moment (no
        # group wait), is dropped: nothing of it arrives within two more group intervals.
        wait_for(lambda: sent_to_sink(sink, hostname="worker-loud"), timeout=10)
        time.sleep(2 * GROUP_INTERVAL_S)
        assert sent_to_sink(sink, hostname="worker-quiet") == []
    finally:
        alerts.close()


def test_basic_auth_is_what_a_protected_alertmanager_accepts(
    sink: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    protected = AlertmanagerProcess(tmp_path, sink, basic_auth=("alerts", AM_PASSWORD)).start()
    try:
        variables = {
            "ALERT_ALERTMANAGER_URL": protected.url,
            "ALERT_ALERTMANAGER_USERNAME": "alerts",
            "ALERT_ALERTMANAGER_PASSWORD": AM_PASSWORD,
        }
        alerts = InProcessAlerts(variables, rule("backlog_auth", "queue_backlog", 1000, ["queue"]))
        try:
            assert alerts.check({"queues": {"file": 2000}}) == ["firing"]
        finally:
            alerts.close()
        (held,) = protected.alerts(rule="backlog_auth")
        assert held["labels"]["queue_name"] == "file"

        wrong = channels_from_settings(
            AlertChannelSettings.from_variables(
                variables | {"ALERT_ALERTMANAGER_PASSWORD": "not-" + AM_PASSWORD}
            )
        )["alertmanager"]
        with pytest.raises(ChannelError) as caught:
            wrong.send(
                Notification(
                    rule="backlog_auth",
                    state="firing",
                    severity="warning",
                    message="2000 over 1000",
                    labels={"queue": "file"},
                    fields={"condition": "queue_backlog"},
                )
            )
        assert "answered HTTP 401" in str(caught.value)
        assert not caught.value.retryable
        assert AM_PASSWORD not in str(caught.value)
        for record in caplog.records:
            assert AM_PASSWORD not in record.getMessage()
    finally:
        protected.stop()
