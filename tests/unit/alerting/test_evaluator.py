"""Alert evaluation in one process, on a real Redis: the rules it loads (a bad file stops start-up
naming the line), each notification sent once across workers by a Redis token, a bounded
history, and the state rules evaluated by one evaluator at a time with their state kept in Redis.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter

from personal_assistant.workers import keys
from personal_assistant.workers.alerting import evaluator
from personal_assistant.workers.alerting.delivery import ChannelDispatcher
from personal_assistant.workers.alerting.evaluator import (
    HISTORY_KEY,
    STATE_CONDITIONS,
    Alerting,
    AlertSender,
    check_alerting_config,
    evaluate_state_rules,
    load_rules,
)
from personal_assistant.workers.alerting.templates import Alert, fingerprint
from personal_assistant.workers.config import ConfigError, WorkerSettings, load_settings
from personal_assistant.workers.redis_clients import probe_client
from tests.support.alert_channels import ScriptedChannel
from tests.support.alert_rules import make_rule
from tests.support.redis_server import free_port

pytestmark = pytest.mark.usefixtures("clean_env")

T0 = 1_700_000_000.0
COOLDOWN = timedelta(minutes=10)
BACKLOG_RULES = """\
rules:
  - name: backlog
    condition: queue_backlog
    threshold: 5
    window: 1m
    channels: [log]
    group_by: [queue]
    message_template: "queue {queue} holds {value}"
  - name: failures
    condition: task_failure
    threshold: 1
    window: 1m
    channels: [log]
    message_template: "{count} failures"
"""


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def alert(state: str = "firing", *, at: float = T0, reminder: bool = False) -> Alert:
    """The ``backlog`` rule's alert for queue ``q``."""
    return Alert(
        rule="backlog",
        state=state,
        severity="warning",
        labels={"queue": "q"},
        fields={"reminder": reminder},
        message=f"queue q {state}",
        fingerprint=fingerprint("backlog", {"queue": "q"}),
        timestamp=at,
        channels=["inbox"],
    )


class Workers:
    """Alert senders as separate workers have them: each its own dispatcher and counter, all
    on one Redis (or none), all delivering to one inbox channel."""

    def __init__(self) -> None:
        self.inbox = ScriptedChannel(name="inbox")
        self.dispatchers: list[ChannelDispatcher] = []
        self.registries: list[CollectorRegistry] = []

    def sender(self, client: redis.Redis | None) -> AlertSender:
        dispatcher = ChannelDispatcher({"inbox": self.inbox}, workers=1)
        registry = CollectorRegistry()
        counter = Counter("sent", "sent", ["rule", "state"], registry=registry)
        self.dispatchers.append(dispatcher)
        self.registries.append(registry)
        rules = {"backlog": make_rule(name="backlog", cooldown=COOLDOWN)}
        return AlertSender(client, dispatcher, rules, counter)

    def delivered(self) -> list[tuple[str, bool]]:
        """(state, reminder) of each notification the inbox received, in order."""
        for dispatcher in self.dispatchers:
            assert dispatcher.flush(timeout=10)
        return [(n.state, bool(n.fields.get("reminder"))) for n in self.inbox.delivered]

    def close(self) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.close()


@pytest.fixture
def workers() -> Iterator[Workers]:
    made = Workers()
    yield made
    made.close()


MakeAlerting = Callable[[WorkerSettings], Alerting]


@pytest.fixture
def make_alerting() -> Iterator[MakeAlerting]:
    """Periodic evaluators (the state rules), as a pool child builds one; closed after."""
    made: list[Alerting] = []

    def make(settings: WorkerSettings) -> Alerting:
        alerting = Alerting(settings, str(settings.celery_broker_url), None, STATE_CONDITIONS)
        made.append(alerting)
        return alerting

    yield make
    for alerting in made:
        alerting.close()


def backlog_settings(tmp_path: Path, broker_url: str) -> WorkerSettings:
    return load_settings(
        celery_broker_url=broker_url, alert_rules_file=rules_file(tmp_path, BACKLOG_RULES)
    )


# --- The rules loaded at start-up -----------------------------------------------------------------


def test_without_a_rules_file_the_built_in_rules_send_to_every_configured_channel() -> None:
    settings = load_settings()

    rules = load_rules(settings, ["email", "log"])

    assert [rule.name for rule in rules] == ["task_failures", "queue_backlog", "worker_offline"]
    assert all(rule.channels == ["email", "log"] for rule in rules)


def test_the_rules_of_a_configured_file_are_loaded_for_the_configured_channels(
    tmp_path: Path,
) -> None:
    settings = load_settings(alert_rules_file=rules_file(tmp_path, BACKLOG_RULES))

    rules = check_alerting_config(settings)

    assert [(rule.name, rule.condition) for rule in rules] == [
        ("backlog", "queue_backlog"),
        ("failures", "task_failure"),
    ]


def test_a_bad_rules_file_stops_start_up_with_one_error_naming_the_line_and_field(
    tmp_path: Path,
) -> None:
    path = rules_file(tmp_path, BACKLOG_RULES.replace("queue_backlog", "queue_depth"))

    with pytest.raises(ConfigError) as caught:
        check_alerting_config(load_settings(alert_rules_file=path))

    message = str(caught.value)
    assert message.startswith(f"alerting: {path} line 3, rule 'backlog', field 'condition': ")
    assert "unknown condition 'queue_depth'" in message
    assert "\n" not in message


def test_a_rule_sending_to_a_channel_that_is_not_configured_stops_start_up(
    tmp_path: Path,
) -> None:
    path = rules_file(tmp_path, BACKLOG_RULES.replace("[log]", "[slack]", 1))

    with pytest.raises(ConfigError, match="unknown channel 'slack'; known: log"):
        check_alerting_config(load_settings(alert_rules_file=path))


# --- Each notification once -----------------------------------------------------------------------


def test_the_same_alert_seen_by_two_workers_is_sent_once(
    workers: Workers, redis_client: redis.Redis
) -> None:
    first, second = workers.sender(redis_client), workers.sender(redis_client)

    first(alert())
    second(alert())

    assert workers.delivered() == [("firing", False)]
    labels = {"rule": "backlog", "state": "firing"}
    counted = [r.get_sample_value("sent_total", labels) for r in workers.registries]
    assert counted == [1.0, None]  # the second worker counted no send


def test_a_resolve_is_sent_once_and_lets_the_next_firing_out_again(
    workers: Workers, redis_client: redis.Redis
) -> None:
    first, second = workers.sender(redis_client), workers.sender(redis_client)

    for state in ("firing", "resolved", "firing"):
        first(alert(state))
        second(alert(state))

    assert workers.delivered() == [("firing", False), ("resolved", False), ("firing", False)]


def test_a_reminder_is_sent_once_per_cooldown_period(
    workers: Workers, redis_client: redis.Redis
) -> None:
    send = workers.sender(redis_client)
    period = COOLDOWN.total_seconds()
    start = period * 2_000_000  # the start of a cooldown period

    send(alert(at=start))
    send(alert(at=start + 10, reminder=True))
    send(alert(at=start + 20, reminder=True))  # the same period: already sent
    send(alert(at=start + period + 1, reminder=True))

    assert workers.delivered() == [("firing", False), ("firing", True), ("firing", True)]


def test_every_notification_sent_is_kept_newest_first_in_a_bounded_history(
    workers: Workers, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluator, "HISTORY_SIZE", 2)
    send = workers.sender(redis_client)

    for state in ("firing", "resolved", "firing"):
        send(alert(state))

    history = [json.loads(raw) for raw in redis_client.lrange(HISTORY_KEY, 0, -1)]
    assert [(entry["rule"], entry["state"]) for entry in history] == [
        ("backlog", "firing"),
        ("backlog", "resolved"),
    ]


def test_without_redis_every_alert_is_sent(workers: Workers) -> None:
    send = workers.sender(None)

    send(alert())
    send(alert())

    assert workers.delivered() == [("firing", False), ("firing", False)]


def test_an_unreachable_redis_is_logged_and_the_alert_is_sent_anyway(
    workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    client = probe_client(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        send = workers.sender(client)
        with caplog.at_level(logging.WARNING, logger=evaluator.logger.name):
            send(alert())
    finally:
        client.close()

    assert workers.delivered() == [("firing", False)]
    assert "alert token unavailable; sending backlog anyway" in caplog.text


# --- The state rules, one evaluator at a time -----------------------------------------------------


def test_only_the_state_rules_are_evaluated_periodically(
    make_alerting: MakeAlerting, tmp_path: Path, redis_url: str
) -> None:
    alerting = make_alerting(backlog_settings(tmp_path, redis_url))

    assert [rule.name for rule in alerting.manager.rules] == ["backlog"]


def test_a_second_evaluator_resolves_what_the_first_one_fired(
    make_alerting: MakeAlerting, tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = backlog_settings(tmp_path, redis_url)
    first, second = make_alerting(settings), make_alerting(settings)

    assert evaluate_state_rules(first, {"queues": {"file_tasks": 10}}) == 1
    assert redis_client.exists(keys.ALERT_STATE_KEY)

    # Another process: it knows the alert fired only from the state kept in Redis.
    assert evaluate_state_rules(second, {"queues": {"file_tasks": 0}}) == 1
    assert second.manager.history()[0]["state"] == "resolved"
    history = [json.loads(raw)["state"] for raw in redis_client.lrange(HISTORY_KEY, 0, -1)]
    assert history == ["resolved", "firing"]


def test_while_another_evaluator_holds_the_lock_nothing_is_evaluated(
    make_alerting: MakeAlerting, tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    alerting = make_alerting(backlog_settings(tmp_path, redis_url))
    other = redis_client.lock(keys.ALERT_LOCK_KEY, timeout=60)
    assert other.acquire(blocking=False)
    try:
        assert evaluate_state_rules(alerting, {"queues": {"file_tasks": 10}}) == -1
    finally:
        other.release()

    assert alerting.manager.history() == []
    assert not redis_client.exists(keys.ALERT_STATE_KEY, HISTORY_KEY)


def test_an_unreadable_saved_state_is_discarded_and_evaluation_goes_on(
    make_alerting: MakeAlerting,
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerting = make_alerting(backlog_settings(tmp_path, redis_url))
    redis_client.set(keys.ALERT_STATE_KEY, "{not json")

    with caplog.at_level(logging.WARNING, logger=evaluator.logger.name):
        sent = evaluate_state_rules(alerting, {"queues": {"file_tasks": 10}})

    assert sent == 1
    assert "discarding unreadable alert state" in caplog.text
    saved: dict[str, Any] = json.loads(redis_client.get(keys.ALERT_STATE_KEY) or b"{}")
    assert "backlog" in saved["groups"]


def test_without_a_redis_broker_the_state_rules_are_evaluated_in_process(
    make_alerting: MakeAlerting, tmp_path: Path
) -> None:
    alerting = make_alerting(backlog_settings(tmp_path, "memory://"))

    assert alerting.client is None
    assert evaluate_state_rules(alerting, {"queues": {"file_tasks": 10}}) == 0
    assert alerting.manager.state()["backlog"]["state"] == "firing"
