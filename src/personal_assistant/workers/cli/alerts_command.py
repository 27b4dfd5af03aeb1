"""``celery -A personal_assistant.workers.celery_app alerts list|rules|test RULE``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click
import redis
from rich.console import Console
from rich.table import Table

from personal_assistant.workers.alerting.channels.config import channels_from_settings
from personal_assistant.workers.alerting.channels.webhooks import ChannelDispatcher, Notification
from personal_assistant.workers.alerting.evaluator import (
    HISTORY_KEY,
    check_alerting_config,
)
from personal_assistant.workers.alerting.templates import render
from personal_assistant.workers.config import ConfigError
from personal_assistant.workers.redis_clients import client_for


def _client(ctx: click.Context) -> redis.Redis:
    return client_for(str(ctx.obj.app.conf.broker_url))


@click.group(name="alerts")
def alerts() -> None:
    """Alerts: the notifications sent, the configured rules, and a test send."""


@alerts.command(name="list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def list_alerts(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The last notifications sent (firing and resolved), newest first."""
    raws = _client(ctx).lrange(HISTORY_KEY, 0, limit - 1)
    entries = [json.loads(raw) for raw in raws]
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry))
        return
    table = Table(title=f"Alerts sent (last {len(entries)})")
    for column in ("time (UTC)", "rule", "state", "severity", "channels", "message"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        when = datetime.fromtimestamp(entry["timestamp"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            when,
            entry["rule"],
            entry["state"],
            entry["severity"],
            ", ".join(entry["channels"]),
            entry["message"][:100],
        )
    Console(width=200).print(table)


@alerts.command(name="rules")
@click.pass_context
def list_rules(ctx: click.Context) -> None:
    """Check and print the configured rules (ALERT_RULES_FILE, else the built-in ones)."""
    try:
        rules = check_alerting_config(ctx.obj.app.settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title="Alert rules")
    for column in ("name", "condition", "threshold", "window", "for", "cooldown", "channels"):
        table.add_column(column)
    for rule in rules:
        table.add_row(
            rule.name,
            rule.condition,
            f"{rule.threshold:g}",
            str(rule.window),
            str(rule.for_duration),
            str(rule.cooldown),
            ", ".join(rule.channels),
        )
    Console(width=200).print(table)


@alerts.command(name="test")
@click.argument("rule_name")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600))
@click.pass_context
def test_rule(ctx: click.Context, rule_name: str, timeout: float) -> None:
    """Send a test notification of RULE through each of its channels; report each result."""
    try:
        rules = {r.name: r for r in check_alerting_config(ctx.obj.app.settings)}
        channels = channels_from_settings(ctx.obj.app.settings.alert_channels)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    rule = rules.get(rule_name)
    if rule is None:
        raise click.ClickException(f"no rule named {rule_name!r}; known: {sorted(rules)}")
    failed: list[str] = []
    fields = {
        "rule": rule.name,
        "condition": rule.condition,
        "threshold": rule.threshold,
        "value": rule.threshold,
        "count": int(rule.threshold),
        "test": True,
    }
    note = Notification(
        rule=rule.name,
        state="firing",
        severity=rule.severity,
        message="TEST: " + render(rule.message_template, fields),
        labels=dict(rule.labels),
        fields=fields,
        fingerprint="test",
        timestamp=time.time(),
    )
    dispatcher = ChannelDispatcher(
        {n: channels[n] for n in rule.channels if n in channels},
        retries=1,
        failure_counter=failed.append,
    )
    try:
        dispatcher.dispatch(rule.channels, note)
        done = dispatcher.flush(timeout)
    finally:
        dispatcher.close()
    for name in rule.channels:
        status = "FAILED" if name in failed or name not in channels else "sent"
        click.echo(f"{name}: {status}")
    if failed or not done or any(n not in channels for n in rule.channels):
        raise click.ClickException("the test notification did not reach every channel")
