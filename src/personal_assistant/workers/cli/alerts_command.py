"""``celery -A personal_assistant.workers.celery_app alerts list|rules|test RULE``.

- ``list``: the last notifications sent (the history kept in the broker's Redis);
- ``rules``: the configured rules, checked; says first when alerting is off
  (ALERTING_ENABLED=false, the default) and how to turn it on;
- ``test RULE``: sends RULE's message through each of its channels, its template filled with
  sample values (:func:`sample_fields`: a sample task name, count, queue, ... for every
  field an alert carries), so what an operator receives is what a real alert looks like; a
  placeholder that no alert carries is named (a real message would show ``{name?}``).

``--json`` shapes:

- ``list --json``: one object per line, newest first, as sent: ``{"rule", "state" ("firing" |
  "resolved"), "severity", "labels": {str: str}, "fields": {...}, "message", "fingerprint",
  "timestamp": <unix s>, "channels": [str]}``;
- ``rules --json``: ``{"alerting_enabled": bool, "rules": [{"name", "condition", "threshold",
  "window_s", "for_s", "cooldown_s", "severity", "channels": [str], "group_by": [str],
  "labels": {str: str}, "task_name": str | null, "message_template", "placeholders": [str]}]}``;
- ``test --json``: ``{"rule", "message", "fields": {...}, "unknown_placeholders": [str] (the
  template's placeholders no alert carries: they show as ``{name?}``), "channels": {<channel>:
  "sent" | "failed" | "not configured" | "unconfirmed" (still sending at --timeout)}}``.

Errors are one line (cli/schedule_options.py): 69 when Redis does not answer (``list``), 64 for
a bad rules file or channel setting, 1 for an unknown rule and when a test notification missed
a channel.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Final

import click
import redis
from rich.table import Table
from rich.text import Text

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.channels.config import channels_from_settings
from personal_assistant.workers.alerting.channels.webhooks import ChannelDispatcher, Notification
from personal_assistant.workers.alerting.evaluator import HISTORY_KEY, check_alerting_config
from personal_assistant.workers.alerting.rule import AlertRule, format_duration
from personal_assistant.workers.alerting.templates import render, validate
from personal_assistant.workers.cli.ops_command import OpsGroup, suggestion
from personal_assistant.workers.cli.terminal import CommandFailed, UsageError, console
from personal_assistant.workers.config import ConfigError, is_redis_url, mask_url
from personal_assistant.workers.redis_clients import client_for
from personal_assistant.workers.routing import queue_for_task

# The one line `rules` (and `test`) print while alerting is off: what is off and how to turn it
# on, in 80 columns (METRICS_ENABLED, which alerting needs, is on by default).
ALERTING_OFF: Final = (
    "alerting is off (ALERTING_ENABLED=false, the default): set ALERTING_ENABLED=true"
)
# Sample values of `alerts test` where the rule names none (a task of the project, so the
# message reads as a real one would).
SAMPLE_TASK: Final = f"{c.TASKS_PACKAGE}.email_tasks.send_email"
SAMPLE_HOST: Final = "celery@sample-host"
SAMPLE_TASK_ID: Final = "00000000-0000-4000-8000-000000000000"
SAMPLE_ERROR: Final = "SampleError: a sample error sent by `alerts test`"
# Runs that succeeded per failure in the sample: a failure rate of 20 %.
SAMPLE_SUCCESSES_PER_FAILURE: Final = 4
# Characters of a message in the `list` table (`list --json` has it whole).
MESSAGE_SHOWN: Final = 200


def _client(ctx: click.Context) -> redis.Redis:
    url = str(ctx.obj.app.conf.broker_url)
    if not is_redis_url(url):
        raise UsageError(f"alerts keep their history in Redis; the broker is {mask_url(url)}")
    return client_for(url)


def _rules(ctx: click.Context) -> list[AlertRule]:
    try:
        return check_alerting_config(ctx.obj.app.settings)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def sample_fields(rule: AlertRule, now: float) -> dict[str, Any]:
    """A sample value for every field an alert of ``rule`` can carry (alerting/manager.py's
    ``_alert``), its labels as they are: what ``alerts test`` fills the template with."""
    task = rule.task_name or rule.labels.get("task_name") or SAMPLE_TASK
    host = rule.labels.get("hostname") or SAMPLE_HOST
    count = max(1, round(rule.threshold))
    started = datetime.fromtimestamp(now, UTC).isoformat()
    fields: dict[str, Any] = {
        "rule": rule.name,
        "condition": rule.condition,
        "severity": rule.severity,
        "threshold": rule.threshold,
        "state": "firing",
        "value": rule.threshold,
        "window": format_duration(rule.window.total_seconds()),
        "started_at": started,
        "resolved_at": started,
        "reminder": False,
        "task_name": task,
        "task_names": [task],
        "task_ids": [SAMPLE_TASK_ID],
        "error": SAMPLE_ERROR,
        "queue": rule.labels.get("queue") or queue_for_task(task),
        "hostname": host,
        "workers": [host],
        "count": count,
        "failed": count,
        "succeeded": count * SAMPLE_SUCCESSES_PER_FAILURE,
        "rate": round(100 / (1 + SAMPLE_SUCCESSES_PER_FAILURE), 1),
        "depth": count,
        "p95": rule.threshold,
        "baseline": rule.threshold / (rule.baseline_multiple or 2.0),
    }
    fields.update(rule.labels)
    fields["test"] = True
    return fields


def unknown_placeholders(rule: AlertRule, fields: dict[str, Any]) -> list[str]:
    """The template's placeholders that no alert carries: a real alert shows ``{name?}``."""
    return [name for name in dict.fromkeys(validate(rule.message_template)) if name not in fields]


@click.group(name="alerts", cls=OpsGroup)
def alerts() -> None:
    """Alerts: the notifications sent, the configured rules, and a test send."""


@alerts.command(name="list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (shape above).")
@click.pass_context
def list_alerts(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The last notifications sent (firing and resolved), newest first.

    \b
    --json prints one object per line, as sent:
      {"rule", "state", "severity", "labels": {...}, "fields": {...},
       "message", "fingerprint", "timestamp": UNIX_S, "channels": [...]}
    """
    raws = _client(ctx).lrange(HISTORY_KEY, 0, limit - 1)
    entries: list[dict[str, Any]] = []
    for raw in raws:
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
    skipped = len(raws) - len(entries)
    if skipped:
        noun = "entry" if skipped == 1 else "entries"
        click.echo(f"{skipped} unreadable {noun} of {HISTORY_KEY} skipped", err=True)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry))
        return
    # Three columns: time, the rule with its state and channels, the message (folded): six
    # would cut every cell at 80 columns.
    table = Table(title=f"Alerts sent (last {len(entries)})")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("rule / state, severity / channels", overflow="fold", ratio=1)
    table.add_column("message", overflow="fold", ratio=2)
    for entry in entries:
        stamp = entry.get("timestamp")
        when = (
            datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if isinstance(stamp, int | float)
            else "-"
        )
        message = str(entry.get("message", ""))
        if len(message) > MESSAGE_SHOWN:
            message = message[: MESSAGE_SHOWN - 1] + "…"
        channels = entry.get("channels")
        state = f"\n{entry.get('state', '?')}, {entry.get('severity', '?')}\n"
        # Text, not str: a message carries task errors, which rich would read as markup.
        table.add_row(
            when,
            Text(str(entry.get("rule", "?")), style="bold")
            + Text(state)
            + Text(", ".join(map(str, channels or [])), style="dim"),
            Text(message),
        )
    console().print(table)


def _rule_json(rule: AlertRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "condition": rule.condition,
        "threshold": rule.threshold,
        "window_s": rule.window.total_seconds(),
        "for_s": rule.for_duration.total_seconds(),
        "cooldown_s": rule.cooldown.total_seconds(),
        "severity": rule.severity,
        "channels": list(rule.channels),
        "group_by": list(rule.group_by),
        "labels": dict(rule.labels),
        "task_name": rule.task_name,
        "message_template": rule.message_template,
        "placeholders": list(dict.fromkeys(validate(rule.message_template))),
    }


@alerts.command(name="rules")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (shape above).")
@click.pass_context
def list_rules(ctx: click.Context, as_json: bool) -> None:
    """Check and print the configured rules (ALERT_RULES_FILE, else the built-in ones); say
    first when alerting is off.

    \b
    --json prints one object:
      {"alerting_enabled": BOOL,
       "rules": [{"name", "condition", "threshold", "window_s", "for_s",
                  "cooldown_s", "severity", "channels", "group_by", "labels",
                  "task_name", "message_template", "placeholders"}]}
    """
    rules = _rules(ctx)
    enabled = bool(ctx.obj.app.settings.alerting_enabled)
    if as_json:
        data = {"alerting_enabled": enabled, "rules": [_rule_json(r) for r in rules]}
        click.echo(json.dumps(data))
        return
    out = console()
    if not enabled:
        out.print(Text(ALERTING_OFF, style="yellow"))
    # Four columns of lines (the rule's name whole, as `alerts test` takes it): seven columns
    # would cut every name and duration in 80 characters.
    table = Table(title="Alert rules")
    table.add_column("name", overflow="fold")
    table.add_column("condition / severity", overflow="fold")
    table.add_column("threshold in window / for, cooldown", overflow="fold")
    table.add_column("channels", overflow="fold")
    for rule in rules:
        window, hold, cooldown = (
            format_duration(d.total_seconds())
            for d in (rule.window, rule.for_duration, rule.cooldown)
        )
        table.add_row(
            Text(rule.name, style="bold"),
            Text(rule.condition) + Text("\n" + rule.severity, style="dim"),
            f"{rule.threshold:g} in {window}\nfor {hold}, cooldown {cooldown}",
            Text(", ".join(rule.channels) or "-"),
        )
    out.print(table)


@alerts.command(name="test")
@click.argument("rule_name")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600))
@click.option("--json", "as_json", is_flag=True, help="One JSON object (shape above).")
@click.pass_context
def test_rule(ctx: click.Context, rule_name: str, timeout: float, as_json: bool) -> None:
    """Send RULE's message, filled with sample values, through each of its channels; report
    each result (exit 1 when one was not reached).

    \b
    --json prints one object:
      {"rule", "message", "fields": {...}, "unknown_placeholders": [...],
       "channels": {CHANNEL: "sent" | "failed" | "not configured"
                              | "unconfirmed"}}
    """
    rules = {r.name: r for r in _rules(ctx)}
    try:
        channels = channels_from_settings(ctx.obj.app.settings.alert_channels)
    except (ConfigError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    rule = rules.get(rule_name)
    if rule is None:
        # 1, as an unknown dead letter id or beat entry name.
        raise CommandFailed(
            f"no rule named {rule_name!r}{suggestion(rule_name, rules)}; "
            f"known: {', '.join(sorted(rules))}"
        )
    failed: list[str] = []
    now = time.time()
    fields = sample_fields(rule, now)
    labels = {**{key: str(fields[key]) for key in rule.group_by}, **rule.labels}
    note = Notification(
        rule=rule.name,
        state="firing",
        severity=rule.severity,
        message="TEST: " + render(rule.message_template, fields),
        labels=labels,
        fields=fields,
        fingerprint="test",
        timestamp=now,
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
    results = {
        name: "not configured" if name not in channels else "failed" if name in failed else "sent"
        for name in rule.channels
    }
    if not done:  # still sending at the timeout: not known to have arrived
        results = {name: "unconfirmed" if r == "sent" else r for name, r in results.items()}
    unknown = unknown_placeholders(rule, fields)
    if as_json:
        data = {
            "rule": rule.name,
            "message": note.message,
            "fields": fields,
            "unknown_placeholders": unknown,
            "channels": results,
        }
        click.echo(json.dumps(data, default=str))
    else:
        click.echo(f"message: {note.message}")
        if unknown:
            holes = ", ".join("{" + name + "}" for name in unknown)
            click.echo(f"note: no alert has {holes}; real messages show it as {{name?}}")
        for name, result in results.items():
            click.echo(f"{name}: {result}")
        if not ctx.obj.app.settings.alerting_enabled:
            click.echo(ALERTING_OFF)
    if not done:
        raise CommandFailed(f"the test notification was still being sent after {timeout:g}s")
    if any(result != "sent" for result in results.values()):
        raise CommandFailed("the test notification did not reach every channel")
