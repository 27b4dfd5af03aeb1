"""Alert evaluation in one process: the rules, the channels, and sending each alert once.

- Fast path, in each worker's main process: the task events the metrics record (a failure, a
  success with its run time, a time-limit kill) go straight to an AlertManager holding the
  event rules (task_failure, failure_rate, performance_degradation, task_timeout); the hook
  (hook.py) re-checks them every ALERT_EVAL_INTERVAL so windows age and alerts resolve with no
  new event.
- Periodic path, on the maintenance queue (beat task ``evaluate_alerts``): the state rules
  (queue_backlog, worker_offline), which no task event reveals, evaluated by one worker at a
  time under a Redis lock, with the rule state kept in Redis between runs.
- Whoever evaluates, a notification is sent once: a Redis token (SET NX) per alert, state and
  firing decides, so N workers that all see the same failures send one message, not N.
- Channels send on their own threads (delivery.py): nothing here blocks a task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import redis
from prometheus_client import Counter

from personal_assistant.workers import keys
from personal_assistant.workers.alerting.channels.base import Notification
from personal_assistant.workers.alerting.channels.config import channels_from_settings
from personal_assistant.workers.alerting.delivery import ChannelDispatcher
from personal_assistant.workers.alerting.manager import Alert, AlertManager
from personal_assistant.workers.alerting.rules_file import (
    OBSERVES,
    AlertRule,
    load_rules_file,
    parse_rules,
)
from personal_assistant.workers.config import ConfigError, WorkerSettings, is_redis_url
from personal_assistant.workers.redis_clients import client_for

logger = logging.getLogger(__name__)

HISTORY_KEY = keys.ALERT_HISTORY_KEY
HISTORY_SIZE = 500  # bounded: Redis runs with noeviction
# Conditions on a snapshot (queue depths, worker liveness), evaluated periodically; the others
# on task events, in each worker.
STATE_CONDITIONS = frozenset(
    cond for cond, kinds in OBSERVES.items() if {"queues", "workers"} & set(kinds)
)
EVENT_CONDITIONS = frozenset(OBSERVES) - STATE_CONDITIONS

# Used when ALERT_RULES_FILE is not set: failures, a backlog and a lost worker, to every channel
# configured (a channel not configured is simply not in the list).
DEFAULT_RULES = """
rules:
  - name: task_failures
    condition: task_failure
    threshold: 5
    window: 1m
    cooldown: 30m
    severity: critical
    channels: [{channels}]
    group_by: [task_name]
    message_template: "{{count}} failures of {{task_name}} in {{window}}: {{error}}"
  - name: queue_backlog
    condition: queue_backlog
    threshold: 1000
    window: 5m
    for: 10m
    severity: warning
    channels: [{channels}]
    group_by: [queue]
    message_template: "queue {{queue}} holds {{value}} messages"
  - name: worker_offline
    condition: worker_offline
    threshold: 1
    window: 1m
    for: 2m
    severity: critical
    channels: [{channels}]
    message_template: "{{value}} worker(s) stopped sending heartbeats"
"""


def check_alerting_config(settings: WorkerSettings) -> list[AlertRule]:
    """Build the channels and rules once at start-up; ConfigError names what is wrong.

    So a bad rules file (with its line and field) or a half-configured channel stops the
    process at start, instead of a worker running with alerting silently off.
    """
    try:
        names = sorted(channels_from_settings(settings.alert_channels))
        return load_rules(settings, names)
    except ValueError as exc:
        raise ConfigError(f"alerting: {exc}") from None


def load_rules(settings: WorkerSettings, channel_names: list[str]) -> list[AlertRule]:
    """The configured rules (ALERT_RULES_FILE), else the built-in ones."""
    if settings.alert_rules_file is not None:
        return load_rules_file(settings.alert_rules_file, channels=channel_names)
    text = DEFAULT_RULES.format(channels=", ".join(channel_names))
    return parse_rules(text, source="<built-in rules>", channels=channel_names)


# Claim the right to send one state of an alert, and clear the opposite state's claim, in one
# step: after a resolve, the next firing may be sent again; after a firing, the next resolve.
_CLAIM = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


class AlertSender:
    """Turns alerts into notifications, once across all workers (Redis token)."""

    def __init__(
        self,
        client: redis.Redis | None,
        dispatcher: ChannelDispatcher,
        rules: Mapping[str, AlertRule],
        sent: Counter,
    ) -> None:
        self.client = client
        self.dispatcher = dispatcher
        self.rules = rules
        self.sent = sent
        self._claim = client.register_script(_CLAIM) if client is not None else None

    def _remember(self, alert: Alert) -> None:
        """Keep the last HISTORY_SIZE notifications in Redis for ``celery ... alerts list``."""
        if self.client is None:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.lpush(HISTORY_KEY, json.dumps(alert.to_dict(), default=repr))
                pipe.ltrim(HISTORY_KEY, 0, HISTORY_SIZE - 1)
                pipe.execute()
        except redis.RedisError:
            logger.warning("could not record alert %s in the history", alert.rule)

    def token_keys(self, alert: Alert) -> tuple[str, str]:
        """(this notification's token, the opposite state's token).

        Workers evaluate on their own, so their firings start at different moments: the token
        names the alert and state, not the moment. A reminder (still firing after the cooldown)
        has its own token per cooldown period.
        """
        fingerprint = alert.fingerprint
        if alert.state == "resolved":
            return (
                keys.alert_token_key(fingerprint, "resolved"),
                keys.alert_token_key(fingerprint, "firing"),
            )
        reminder = None
        if alert.fields.get("reminder"):
            cooldown = max(self.rules[alert.rule].cooldown.total_seconds(), 1.0)
            reminder = int(alert.timestamp // cooldown)
        return (
            keys.alert_token_key(fingerprint, "firing", reminder=reminder),
            keys.alert_token_key(fingerprint, "resolved"),
        )

    def __call__(self, alert: Alert) -> None:
        """Send ``alert`` unless another evaluator already did."""
        if self._claim is not None:
            ttl = int(max(self.rules[alert.rule].cooldown.total_seconds(), 60))
            try:
                if not self._claim(keys=list(self.token_keys(alert)), args=[ttl]):
                    return  # another worker sent this one
            except redis.RedisError:
                logger.warning("alert token unavailable; sending %s anyway", alert.rule)
        self.sent.labels(alert.rule, alert.state).inc()
        self._remember(alert)
        self.dispatcher.dispatch(
            alert.channels,
            Notification(
                rule=alert.rule,
                state=alert.state,
                severity=alert.severity,
                message=alert.message,
                labels=alert.labels,
                fields=alert.fields,
                fingerprint=alert.fingerprint,
                timestamp=alert.timestamp,
            ),
        )


class Alerting:
    """The alerting components of one process (built once, in the process that evaluates)."""

    def __init__(
        self, settings: WorkerSettings, broker_url: str, registry: Any, conditions: frozenset[str]
    ) -> None:
        channels = channels_from_settings(settings.alert_channels)
        names = sorted(channels)
        rules = [r for r in load_rules(settings, names) if r.condition in conditions]
        self.failures = Counter(
            "pa_alert_channel_failures",
            "Notifications a channel failed to send",
            ["channel"],
            registry=registry,
        )
        sent = Counter(
            "pa_alerts_sent", "Alert notifications sent", ["rule", "state"], registry=registry
        )
        self.dispatcher = ChannelDispatcher(
            channels, failure_counter=lambda name: self.failures.labels(name).inc()
        )
        self.client = client_for(broker_url) if is_redis_url(broker_url) else None
        self.manager = AlertManager(channels=names)
        for rule in rules:
            self.manager.add_rule(rule)
        self.manager.notifier = AlertSender(
            self.client, self.dispatcher, {r.name: r for r in rules}, sent
        )

    def on_task_event(self, event: dict[str, Any]) -> None:
        """Fast path: one task event (never raises into the worker)."""
        try:
            self.manager.check_alerts(event)
        except Exception:
            logger.exception("alert evaluation failed; task unaffected")

    def tick(self) -> None:
        """Age the windows: resolves and for-durations happen without new events."""
        self.on_task_event({})

    def close(self) -> None:
        """Stop the channel threads (queued notifications get a moment to go out)."""
        self.dispatcher.flush(timeout=5.0)
        self.dispatcher.close()


def evaluate_state_rules(alerting: Alerting, snapshot: dict[str, Any]) -> int:
    """Periodic path: evaluate the state rules on ``snapshot`` with the state kept in Redis.

    One evaluator at a time (a Redis lock); returns the number of alerts sent, or -1 when another
    evaluator holds the lock.
    """
    client = alerting.client
    if client is None:
        alerting.manager.check_alerts(snapshot)
        return 0
    lock = client.lock(keys.ALERT_LOCK_KEY, timeout=60, blocking=False)
    if not lock.acquire():
        return -1
    try:
        raw = client.get(keys.ALERT_STATE_KEY)
        if raw:
            try:
                alerting.manager.import_state(json.loads(raw))
            except ValueError:
                logger.warning("discarding unreadable alert state")
        sent = alerting.manager.check_alerts(snapshot)
        client.set(keys.ALERT_STATE_KEY, json.dumps(alerting.manager.export_state()))
        return len(sent)
    finally:
        lock.release()
