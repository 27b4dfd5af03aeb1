"""Alert rules: what one is and observes, what makes one valid, and reading them from YAML.

A rules file looks like this (durations are seconds or ``30s``, ``5m``, ``1h``, ``1d``, and
may be combined, ``1h30m``)::

    rules:
      - name: email_failures
        condition: task_failure      # see CONDITIONS
        threshold: 3
        window: 5m
        for: 1m                       # the condition must hold this long before it fires
        cooldown: 30m                 # a firing alert is not re-sent sooner than this
        channels: [slack, email]
        severity: critical
        message_template: "{count} failures of {task_name} in {window}: {error}"
        task_name: personal_assistant.workers.tasks.email_tasks.send_email
        labels: {team: mail}
        group_by: [task_name]

The file is composed with PyYAML's SafeLoader and read node by node, so every error names the
file, the line and the field; a tag other than YAML's plain data types (``!!python/object``, a
custom ``!tag``) is refused, never constructed. :func:`validate_rule` is the same check
:meth:`AlertManager.add_rule` runs on rules built in Python.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import yaml

from personal_assistant.workers.utils import alert_templates

CONDITIONS: Final = (
    "task_failure",  # failures in the window >= threshold
    "failure_rate",  # failed / (failed + succeeded) in the window >= threshold (a fraction)
    "performance_degradation",  # p95 run time in the window > threshold seconds (see baseline)
    "queue_backlog",  # deepest matching queue >= threshold messages
    "worker_offline",  # workers reported down >= threshold
    "task_timeout",  # time-limit kills in the window >= threshold
)
KNOWN_CHANNELS: Final = ("log", "email", "slack", "webhook")
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


class RuleError(ValueError):
    """A rule that cannot work; ``field`` names the culprit and ``reason`` says why."""

    def __init__(self, rule: str, field_name: str, reason: str) -> None:
        super().__init__(f"rule {rule!r}, field {field_name!r}: {reason}")
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
    return f"unknown {kind} {value!r}; known: {', '.join(names)}"


def validate_rule(rule: AlertRule, channels: Collection[str] = KNOWN_CHANNELS) -> None:
    """Raise :class:`RuleError` (a ValueError) on the first field that cannot work."""

    def check(ok: bool, name: str, reason: str) -> None:
        if not ok:
            raise RuleError(str(rule.name), name, reason)

    ok = isinstance(rule.name, str) and bool(rule.name.strip())
    check(ok, "name", f"must be a non-empty string, got {rule.name!r}")
    check(rule.condition in CONDITIONS, "condition", known("condition", rule.condition, CONDITIONS))
    t = rule.threshold
    number = isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
    check(number and t >= 0, "threshold", f"must be a number >= 0, got {t!r}")
    if rule.condition == "failure_rate":
        check(t <= 1, "threshold", f"is a fraction of runs (0.1 means 10 %), got {t!r}")
    for name in ("window", "for_duration", "cooldown"):
        value = getattr(rule, name)
        ok = isinstance(value, timedelta) and value >= timedelta(0)
        check(ok, name, f"must be a duration >= 0, got {value!r}")
    check(rule.window > timedelta(0), "window", "must be longer than 0")
    ok = isinstance(rule.channels, list) and bool(rule.channels)
    check(ok, "channels", f"must be a non-empty list of channels, got {rule.channels!r}")
    for channel in rule.channels:
        check(channel in channels, "channels", known("channel", channel, channels))
    check(rule.severity in SEVERITIES, "severity", known("severity", rule.severity, SEVERITIES))
    try:
        alert_templates.validate(rule.message_template)
    except ValueError as exc:
        raise RuleError(str(rule.name), "message_template", str(exc)) from exc
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
        ok = isinstance(multiple, (int, float)) and math.isfinite(multiple) and multiple > 0
        check(ok, "baseline_multiple", f"must be a number > 0, got {multiple!r}")
    check(isinstance(rule.group_by, list), "group_by", "must be a list")
    for key in rule.group_by:
        check(key in GROUP_BY_KEYS, "group_by", known("group_by key", key, GROUP_BY_KEYS))


def count_value(value: Any, where: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    if not ok or not math.isfinite(value):
        raise ValueError(f"metrics {where} must be a number >= 0, got {value!r}")
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
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value.strip()))
    if seconds is not None:
        with contextlib.suppress(OverflowError, ValueError):  # too long, infinite or NaN
            return timedelta(seconds=seconds)
    raise ValueError(f"bad duration {value!r}: write seconds (300) or 30s, 5m, 1h, 1d")


def format_duration(seconds: float) -> str:
    """300 -> '5m', 90 -> '90s': the largest unit that divides evenly, as rule files write it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class RuleFileError(ValueError):
    """A rules file that cannot be loaded: the message names the file, line, rule and field."""

    def __init__(
        self,
        source: str,
        line: int | None,
        reason: str,
        *,
        rule: str | None = None,
        field: str | None = None,
    ) -> None:
        where = source + (f" line {line}" if line is not None else "")
        where += f", rule {rule}" if rule is not None else ""
        where += f", field {field!r}" if field is not None else ""
        super().__init__(f"{where}: {reason}")
        self.source, self.line, self.rule = source, line, rule
        self.field, self.reason = field, reason


# YAML's plain data types; anything else (python/object, a custom !tag) is refused.
_SAFE_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "seq", "map")
)
# The keys of a rule in the file: AlertRule's fields, except that "for" is its for_duration.
_FIELDS: Final = (
    "name", "condition", "threshold", "window", "for", "cooldown", "channels", "severity",
    "message_template", "labels", "task_name", "baseline_multiple", "group_by",
)  # fmt: skip
_REQUIRED: Final = ("name", "condition", "threshold", "window", "channels", "message_template")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _attribute(key: str) -> str:
    return "for_duration" if key == "for" else key


class _Reader:
    """Turns the composed node tree into rules, raising RuleFileError at the node at fault."""

    def __init__(self, source: str, channels: Collection[str]) -> None:
        self.source, self.channels = source, channels
        self.constructor = yaml.SafeLoader("")
        self.rule: str | None = None
        self.checked: set[int] = set()  # node ids: aliases share nodes, and may form cycles

    def fail(self, node: yaml.Node | None, field: str | None, reason: str) -> RuleFileError:
        line = None if node is None else _line(node)
        return RuleFileError(self.source, line, reason, rule=self.rule, field=field)

    def value(self, node: yaml.Node, field: str | None) -> Any:
        """The plain data of ``node`` once every tag in it is checked (none is constructed)."""
        pending = [node]
        while pending:
            current = pending.pop()
            if id(current) in self.checked:
                continue
            self.checked.add(id(current))
            if current.tag not in _SAFE_TAGS:
                reason = f"tag {current.tag!r} is not allowed (plain YAML data only)"
                raise self.fail(current, field, reason)
            if isinstance(current, yaml.SequenceNode):
                pending += current.value
            elif isinstance(current, yaml.MappingNode):
                pending += [n for pair in current.value for n in pair]
        return self.constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, field: str | None) -> dict[str, yaml.Node]:
        """A mapping node's value nodes by key; each key a string, given once."""
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            raise self.fail(node, field, f"expected a mapping of fields, got {kind}")
        if node.tag not in _SAFE_TAGS:
            raise self.fail(node, field, f"tag {node.tag!r} is not allowed (plain YAML data only)")
        entries: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node, field)
            if not isinstance(key, str):
                raise self.fail(key_node, field, f"a field name must be a string, got {key!r}")
            if key in entries:
                raise self.fail(key_node, key, "given twice")
            entries[key] = value_node
        return entries

    def rule_from(self, index: int, node: yaml.Node) -> AlertRule:
        self.rule = f"#{index + 1}"
        if isinstance(node, yaml.MappingNode):  # name the rule in errors as soon as possible
            names = [v.value for k, v in node.value if k.value == "name" and v.tag in _SAFE_TAGS]
            if names and isinstance(names[0], str):
                self.rule = repr(names[0])
        nodes = self.mapping(node, "rules")
        for key, value_node in nodes.items():
            if key not in _FIELDS:
                raise self.fail(value_node, key, known("field", key, _FIELDS))
        values = {key: self.value(value_node, key) for key, value_node in nodes.items()}
        if values.get("condition") == "worker_offline":
            values.setdefault("threshold", 1)  # one worker down is worth knowing by default
        for key in _REQUIRED:
            if key not in values:
                raise self.fail(node, key, "missing (required: " + ", ".join(_REQUIRED) + ")")
        for key in ("window", "for", "cooldown"):
            if key in values:
                try:
                    values[key] = parse_duration(values[key])
                except ValueError as exc:
                    raise self.fail(nodes[key], key, str(exc)) from None
        rule = AlertRule(**{_attribute(key): value for key, value in values.items()})
        try:
            validate_rule(rule, self.channels)
        except RuleError as exc:
            key = "for" if exc.field == "for_duration" else exc.field
            raise self.fail(nodes.get(key, node), key, exc.reason) from None
        return rule

    def rules_from(self, root: yaml.Node | None) -> list[AlertRule]:
        if root is None:
            raise RuleFileError(self.source, 1, "empty file; expected 'rules:' and a list")
        top = self.mapping(root, None)
        for key, value_node in top.items():
            if key != "rules":
                raise self.fail(value_node, key, "unknown top-level key; expected only 'rules'")
        listed = top.get("rules")
        if not isinstance(listed, yaml.SequenceNode) or listed.tag not in _SAFE_TAGS:
            at = root if listed is None else listed
            raise self.fail(at, "rules", "expected 'rules:' followed by a list of rules")
        rules: list[AlertRule] = []
        first_line: dict[str, int] = {}
        for index, node in enumerate(listed.value):
            rule = self.rule_from(index, node)
            if rule.name in first_line:
                reason = f"duplicate rule name (first defined at line {first_line[rule.name]})"
                raise self.fail(node, "name", reason)
            first_line[rule.name] = _line(node)
            rules.append(rule)
        return rules


def parse_rules(
    text: str, *, source: str = "<rules>", channels: Collection[str] = KNOWN_CHANNELS
) -> list[AlertRule]:
    """The rules of a YAML document; ``source`` names it in errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else int(mark.line) + 1
        raise RuleFileError(source, line, f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise RuleFileError(source, None, f"not valid YAML: {exc}") from None
    return _Reader(source, channels).rules_from(root)


def load_rules_file(
    path: str | Path, *, channels: Collection[str] = KNOWN_CHANNELS
) -> list[AlertRule]:
    """The rules of the YAML file at ``path``; every problem is a :class:`RuleFileError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError(str(path), None, f"cannot read the file: {exc}") from None
    return parse_rules(text, source=str(path), channels=channels)
