"""An alert rule: what it observes, when it holds, what makes one valid, and its durations.

:class:`AlertRule` is the rule as code holds it (``rules_file`` reads it from YAML, and
re-exports everything here); :func:`validate_rule` is the check every rule passes, read from a
file or built in Python (:meth:`AlertManager.add_rule`). Error messages show values through
:func:`shown`, so a huge name or number never makes a huge message.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from personal_assistant.workers.alerting import templates as alert_templates
from personal_assistant.workers.bounded_yaml import short_repr

CONDITIONS: Final = (
    "task_failure",  # failures in the window >= threshold
    "failure_rate",  # failed / (failed + succeeded) in the window >= threshold (a fraction)
    "performance_degradation",  # p95 run time in the window > threshold seconds (see baseline)
    "queue_backlog",  # deepest matching queue >= threshold messages
    "worker_offline",  # workers reported down >= threshold
    "task_timeout",  # time-limit kills in the window >= threshold
)
KNOWN_CHANNELS: Final = ("log", "email", "slack", "webhook", "alertmanager")
SEVERITIES: Final = ("info", "warning", "critical")
GROUP_BY_KEYS: Final = ("task_name", "queue", "hostname")
# What each condition looks at: counted events, run times ("run"), or gauges ("queues" and
# "workers" are whole snapshots: the latest replaces the previous).
OBSERVES: Final[dict[str, tuple[str, ...]]] = {
    "task_failure": ("failed",),
    "failure_rate": ("failed", "succeeded"),
    "performance_degradation": ("run",),
    "queue_backlog": ("queues",),
    "worker_offline": ("workers",),
    "task_timeout": ("timeout",),
}

# The signal hooks' events and the kind of observation each one is.
EVENTS: Final = {"task_failed": "failed", "task_succeeded": "succeeded", "task_timeout": "timeout"}
EVENT_ATTRS: Final = ("task_name", "task_id", "error", "queue", "hostname")
# A duration is written in a few characters ("1h30m"); a longer string is not one.
_MAX_DURATION_CHARS: Final = 64


def shown(value: Any) -> str:
    """``value`` as an error message may show it: a short repr, never a huge one."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # repr() of an int past 4,300 digits raises; its size is what matters anyway.
        return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1:,} digits>"
    return short_repr(value)


def finite_number(value: Any) -> bool:
    """An int or float (not a bool) that a float can hold: no inf, NaN or 5,000-digit int."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


class RuleError(ValueError):
    """A rule that cannot work; ``field`` names the culprit and ``reason`` says why."""

    def __init__(self, rule: object, field_name: str, reason: str) -> None:
        super().__init__(f"rule {shown(rule)}, field {shown(field_name)}: {reason}")
        self.field, self.reason = field_name, reason


@dataclass
class AlertRule:
    """When to alert (a condition over a window) and how (channels, message, severity)."""

    name: str
    condition: str  # one of CONDITIONS
    threshold: float
    window: timedelta
    channels: list[str]
    message_template: str
    severity: str = "warning"
    for_duration: timedelta = timedelta(0)
    cooldown: timedelta = timedelta(minutes=30)
    labels: dict[str, str] = field(default_factory=dict)
    task_name: str | None = None  # only events and metrics of this task
    baseline_multiple: float | None = None  # performance_degradation: N x the usual p95
    group_by: list[str] = field(default_factory=list)  # one alert per value of these keys

    def wants(self, kind: str, attrs: Mapping[str, Any]) -> bool:
        """Whether an observation (a failure, a run time...) of a task belongs in this rule."""
        if kind not in OBSERVES[self.condition]:
            return False
        if self.task_name is not None and attrs.get("task_name") != self.task_name:
            return False
        return all(
            attrs.get(k) == self.labels[k] for k in ("queue", "hostname") if k in self.labels
        )

    def holds(self, value: float | None, baseline: float | None = None) -> bool:
        """The condition on a measured value; nothing observed (None or 0) never holds."""
        if value is None or value <= 0:
            return False
        if self.condition != "performance_degradation":
            return value >= self.threshold
        multiple = self.baseline_multiple
        over_baseline = multiple is None or (baseline is not None and value > multiple * baseline)
        return value > self.threshold and over_baseline


def known(kind: str, value: Any, names: Collection[str]) -> str:
    """The refusal of an unknown name, with the names that would work."""
    return f"unknown {kind} {shown(value)}; known: {', '.join(names)}"


def validate_rule(rule: AlertRule, channels: Collection[str] = KNOWN_CHANNELS) -> None:
    """Raise :class:`RuleError` (a ValueError) on the first field that cannot work."""

    def check(ok: bool, name: str, reason: str) -> None:
        if not ok:
            raise RuleError(rule.name, name, reason)

    ok = isinstance(rule.name, str) and bool(rule.name.strip())
    check(ok, "name", f"must be a non-empty string, got {shown(rule.name)}")
    check(rule.condition in CONDITIONS, "condition", known("condition", rule.condition, CONDITIONS))
    t = rule.threshold
    check(finite_number(t) and t >= 0, "threshold", f"must be a number >= 0, got {shown(t)}")
    if rule.condition == "failure_rate":
        check(t <= 1, "threshold", f"is a fraction of runs (0.1 means 10 %), got {shown(t)}")
    for name in ("window", "for_duration", "cooldown"):
        value = getattr(rule, name)
        ok = isinstance(value, timedelta) and value >= timedelta(0)
        check(ok, name, f"must be a duration >= 0, got {shown(value)}")
    check(rule.window > timedelta(0), "window", "must be longer than 0")
    ok = isinstance(rule.channels, list) and bool(rule.channels)
    check(ok, "channels", f"must be a non-empty list of channels, got {shown(rule.channels)}")
    for channel in rule.channels:
        ok = isinstance(channel, str) and channel in channels  # a list is no set member
        check(ok, "channels", known("channel", channel, channels))
    ok = isinstance(rule.severity, str) and rule.severity in SEVERITIES
    check(ok, "severity", known("severity", rule.severity, SEVERITIES))
    try:
        alert_templates.validate(rule.message_template)
    except ValueError as exc:
        raise RuleError(rule.name, "message_template", str(exc)) from exc
    ok = isinstance(rule.labels, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in rule.labels.items()
    )
    check(ok, "labels", "must map strings to strings")
    ok = rule.task_name is None or (isinstance(rule.task_name, str) and bool(rule.task_name))
    check(ok, "task_name", "must be a task's name or None")
    multiple = rule.baseline_multiple
    if multiple is not None:
        only = "only for performance_degradation"
        check(rule.condition == "performance_degradation", "baseline_multiple", only)
        ok = finite_number(multiple) and multiple > 0
        check(ok, "baseline_multiple", f"must be a number > 0, got {shown(multiple)}")
    check(isinstance(rule.group_by, list), "group_by", "must be a list")
    for key in rule.group_by:
        check(
            isinstance(key, str) and key in GROUP_BY_KEYS,
            "group_by",
            known("group_by key", key, GROUP_BY_KEYS),
        )


def count_value(value: Any, where: str) -> float:
    if not finite_number(value) or value < 0:
        raise ValueError(f"metrics {where} must be a number >= 0, got {shown(value)}")
    return float(value)


def observations(metrics: Mapping[str, Any]) -> list[tuple[str, float, dict[str, Any]]]:
    """What one ``check_alerts`` argument reports: (kind, count or seconds, task attributes).

    Kinds are ``failed``, ``succeeded``, ``timeout`` (counts) and ``run`` (seconds). Counts in a
    snapshot are deltas; a snapshot task's ``p95`` counts as one run of that duration.
    """
    event = metrics.get("event")
    if event is not None:
        if event not in EVENTS:
            raise ValueError(known("event", event, tuple(EVENTS)))
        attrs = {key: metrics.get(key) for key in EVENT_ATTRS}
        found = [(EVENTS[event], 1.0, attrs)]
        if metrics.get("runtime") is not None:
            found.append(("run", count_value(metrics["runtime"], "'runtime'"), attrs))
        return found
    found = [
        (kind, count_value(metrics[key], repr(key)), {})
        for key, kind in (("failed_tasks", "failed"), ("timeouts", "timeout"))
        if key in metrics
    ]
    for name, stats in (metrics.get("tasks") or {}).items():
        if not isinstance(stats, Mapping):
            raise ValueError(f"metrics tasks[{name!r}] must be a mapping, got {stats!r}")
        for key, kind in (("failed", "failed"), ("succeeded", "succeeded"), ("p95", "run")):
            if stats.get(key) is not None:
                amount = count_value(stats[key], f"tasks[{name!r}][{key!r}]")
                found.append((kind, amount, {"task_name": name}))
    return found


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(value: Any) -> timedelta:
    """Seconds (300) or a number with a unit (30s, 5m, 1h, 1d, or 1h30m) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        seconds = value
    elif (
        isinstance(value, str)
        and len(value) <= _MAX_DURATION_CHARS
        and _DURATION.fullmatch(value.strip())
    ):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value.strip()))
    if seconds is not None:
        with contextlib.suppress(OverflowError, ValueError):  # too long, infinite or NaN
            return timedelta(seconds=seconds)
    raise ValueError(f"bad duration {shown(value)}: write seconds (300) or 30s, 5m, 1h, 1d")


def format_duration(seconds: float) -> str:
    """300 -> '5m', 90 -> '90s': the largest unit that divides evenly, as rule files write it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
