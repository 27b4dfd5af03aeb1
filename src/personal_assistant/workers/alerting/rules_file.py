"""Alert rules files: reading rules from YAML (the rule itself, and its checks, are in
``alert_rule``, whose names this module re-exports as their historical import path).

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

The file is read by ``bounded_yaml`` (a regular file of at most ``ALERT_RULES_MAX_BYTES``,
UTF-8, no aliases, bounded depth and value count, plain data only: no ``!!python/object`` or
custom ``!tag``, no ``.inf``/``.nan``, no integer of more than 18 digits) and then node by node,
so every error is one :class:`RuleFileError` naming the file, the line and the field, with any
value it shows cut short. :func:`validate_rule` is the same check :meth:`AlertManager.add_rule`
runs on rules built in Python.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, Final

import yaml

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.rule import (
    CONDITIONS,
    EVENT_ATTRS,
    EVENTS,
    GROUP_BY_KEYS,
    KNOWN_CHANNELS,
    OBSERVES,
    SEVERITIES,
    AlertRule,
    RuleError,
    count_value,
    finite_number,
    format_duration,
    known,
    observations,
    parse_duration,
    shown,
    validate_rule,
)
from personal_assistant.workers.bounded_yaml import (
    InputFileError,
    Limits,
    compose,
    construct,
    decode_text,
    node_line,
    read_user_file,
)

__all__ = [
    "CONDITIONS",
    "EVENTS",
    "EVENT_ATTRS",
    "GROUP_BY_KEYS",
    "KNOWN_CHANNELS",
    "LIMITS",
    "MAX_RULE_FILE_VALUES",
    "OBSERVES",
    "SEVERITIES",
    "AlertRule",
    "RuleError",
    "RuleFileError",
    "count_value",
    "finite_number",
    "format_duration",
    "known",
    "load_rules_file",
    "observations",
    "parse_duration",
    "parse_rules",
    "shown",
    "validate_rule",
]


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
        where += f", field {shown(field)}" if field is not None else ""
        super().__init__(f"{where}: {reason}")
        self.source, self.line, self.rule = source, line, rule
        self.field, self.reason = field, reason


# The keys of a rule in the file: AlertRule's fields, except that "for" is its for_duration.
_FIELDS: Final = (
    "name", "condition", "threshold", "window", "for", "cooldown", "channels", "severity",
    "message_template", "labels", "task_name", "baseline_multiple", "group_by",
)  # fmt: skip
_REQUIRED: Final = ("name", "condition", "threshold", "window", "channels", "message_template")
# What a rules file may hold: a few hundred rules of a dozen or two values each is a few
# thousand values; 20,000 leaves room and keeps the worst file at a fifth of a second to read
# (bounded_yaml's default, 100,000, is sized for workflows).
MAX_RULE_FILE_VALUES: Final = 20_000
LIMITS: Final = Limits(max_bytes=c.ALERT_RULES_MAX_BYTES, max_nodes=MAX_RULE_FILE_VALUES)
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"


def _attribute(key: str) -> str:
    return "for_duration" if key == "for" else key


class _Reader:
    """Turns the composed node tree into rules, raising RuleFileError at the node at fault."""

    def __init__(self, source: str, channels: Collection[str]) -> None:
        self.source, self.channels = source, channels
        self.rule: str | None = None

    def fail(self, node: yaml.Node | None, field: str | None, reason: str) -> RuleFileError:
        line = None if node is None else node_line(node)
        return RuleFileError(self.source, line, reason, rule=self.rule, field=field)

    def value(self, node: yaml.Node, field: str | None) -> Any:
        """The plain data of ``node`` (bounded_yaml.construct: plain tags, finite numbers...)."""
        try:
            return construct(node, self.source)
        except InputFileError as exc:
            raise RuleFileError(
                self.source, exc.line, exc.reason, rule=self.rule, field=field
            ) from None

    def mapping(self, node: yaml.Node, field: str | None) -> dict[str, yaml.Node]:
        """A mapping node's value nodes by key; each key a single value, given once."""
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            raise self.fail(node, field, f"expected a mapping of fields, got {kind}")
        if node.tag != _MAP_TAG:
            reason = f"tag {shown(node.tag)} is not allowed (plain YAML data only)"
            raise self.fail(node, field, reason)
        entries: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, field, "a field name must be a single value")
            self.value(key_node, field)  # its tag must be plain data too
            # The key as written, as JSON has it (YAML 1.1 would read `on:` as True).
            key = str(key_node.value)
            if key in entries:
                raise self.fail(key_node, key, "given twice")
            entries[key] = value_node
        return entries

    def rule_from(self, index: int, node: yaml.Node) -> AlertRule:
        self.rule = f"#{index + 1}"
        if isinstance(node, yaml.MappingNode):  # name the rule in errors as soon as possible
            names = [
                v.value
                for k, v in node.value
                if isinstance(k, yaml.ScalarNode) and k.value == "name"
                if isinstance(v, yaml.ScalarNode) and v.tag == "tag:yaml.org,2002:str"
            ]
            if names:
                self.rule = shown(str(names[0]))
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
        if not isinstance(listed, yaml.SequenceNode) or listed.tag != _SEQ_TAG:
            at = root if listed is None else listed
            raise self.fail(at, "rules", "expected 'rules:' followed by a list of rules")
        rules: list[AlertRule] = []
        first_line: dict[str, int] = {}
        for index, node in enumerate(listed.value):
            rule = self.rule_from(index, node)
            if rule.name in first_line:
                reason = f"duplicate rule name (first defined at line {first_line[rule.name]})"
                raise self.fail(node, "name", reason)
            first_line[rule.name] = node_line(node)
            rules.append(rule)
        return rules


def parse_rules(
    text: str | bytes, *, source: str = "<rules>", channels: Collection[str] = KNOWN_CHANNELS
) -> list[AlertRule]:
    """The rules of a YAML document (text, or bytes that must be UTF-8); ``source`` names it in
    errors. Read under :data:`LIMITS` (bounded_yaml): no aliases, bounded size, depth and value
    count, plain data only; every problem is a :class:`RuleFileError` naming the line."""
    try:
        # Characters first (never more than bytes), so a huge text is not encoded to be measured.
        too_large = len(text) > LIMITS.max_bytes or (
            isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) > LIMITS.max_bytes
        )
        if too_large:
            raise InputFileError(source, f"larger than the limit of {LIMITS.max_bytes:,} bytes")
        root = compose(decode_text(text, source), source, LIMITS)
    except InputFileError as exc:
        raise RuleFileError(source, exc.line, exc.reason) from None
    return _Reader(source, channels).rules_from(root)


def load_rules_file(
    path: str | Path, *, channels: Collection[str] = KNOWN_CHANNELS
) -> list[AlertRule]:
    """The rules of the YAML file at ``path`` (a regular file of at most
    ``ALERT_RULES_MAX_BYTES``); every problem is a :class:`RuleFileError`."""
    try:
        data = read_user_file(path, LIMITS.max_bytes)
    except InputFileError as exc:
        raise RuleFileError(str(path), exc.line, exc.reason) from None
    return parse_rules(data, source=str(path), channels=channels)
