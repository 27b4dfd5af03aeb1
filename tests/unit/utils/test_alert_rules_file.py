"""Alert rules read from YAML: a good file loads, every bad one names file, line and field."""

from __future__ import annotations

import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from personal_assistant.workers.utils.alert_rules_file import (
    CONDITIONS,
    AlertRule,
    RuleFileError,
    load_rules_file,
    parse_duration,
    parse_rules,
)
from personal_assistant.workers.utils.alerting import AlertManager

GOOD = """\
rules:
  - name: email_failures
    condition: task_failure
    threshold: 3
    window: 5m
    for: 1m
    cooldown: 1h
    channels: [slack, email]
    severity: critical
    message_template: "{count} failures of {task_name} in {window}: {error}"
    task_name: personal_assistant.workers.tasks.email_tasks.send_email
    labels: {team: mail}
    group_by: [task_name]
  - name: slow_ai
    condition: performance_degradation
    threshold: 0.5
    window: 300
    channels: [log]
    message_template: "p95 {p95}s against {baseline}s"
    baseline_multiple: 3
  - name: worker_down
    condition: worker_offline
    window: 1m
    channels: [webhook]
    message_template: "down: {workers}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_valid_file_loads_every_field(tmp_path: Path) -> None:
    rules = load_rules_file(write(tmp_path, GOOD))

    assert [rule.name for rule in rules] == ["email_failures", "slow_ai", "worker_down"]
    assert rules[0] == AlertRule(
        name="email_failures",
        condition="task_failure",
        threshold=3,
        window=timedelta(minutes=5),
        channels=["slack", "email"],
        message_template="{count} failures of {task_name} in {window}: {error}",
        severity="critical",
        for_duration=timedelta(minutes=1),
        cooldown=timedelta(hours=1),
        labels={"team": "mail"},
        task_name="personal_assistant.workers.tasks.email_tasks.send_email",
        group_by=["task_name"],
    )
    assert rules[1].window == timedelta(seconds=300)
    assert rules[1].baseline_multiple == 3
    assert rules[1].cooldown == timedelta(minutes=30)  # the default


def test_worker_offline_needs_no_threshold_and_defaults_to_one_worker(tmp_path: Path) -> None:
    rules = load_rules_file(write(tmp_path, GOOD))
    assert rules[2].threshold == 1


def test_loaded_rules_are_accepted_by_the_manager(tmp_path: Path) -> None:
    manager = AlertManager()
    for rule in load_rules_file(write(tmp_path, GOOD)):
        manager.add_rule(rule)
    assert len(manager.rules) == 3


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(300, 300), (1.5, 1.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400),
     ("1h30m", 5400), (" 2m ", 120), ("0.5m", 30)],
)  # fmt: skip
def test_durations_are_seconds_or_a_number_with_a_unit(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5x", "m5", "", "-5", -5, True, None, "1e999999d", float("nan")])
def test_a_bad_duration_says_how_to_write_one(text: object) -> None:
    with pytest.raises(ValueError, match=r"bad duration .*30s, 5m, 1h, 1d"):
        parse_duration(text)


RULE = """\
rules:
  - name: x
    condition: task_failure
    threshold: 1
    window: 5m
    channels: [log]
    message_template: "failed: {task_name}"
"""


def bad(replace: str, by: str) -> str:
    assert replace in RULE
    return RULE.replace(replace, by)


# (name, file text, line, rule, field, words the message must contain)
BAD_INPUTS: list[tuple[str, str, int, str | None, str | None, str]] = [
    ("unknown condition", bad("task_failure", "foo"), 3, "'x'", "condition",
     "unknown condition 'foo'; known: " + ", ".join(CONDITIONS)),
    ("unknown channel", bad("[log]", "[log, sms]"), 6, "'x'", "channels",
     "unknown channel 'sms'; known: log, email, slack, webhook"),
    ("bad duration", bad("5m", "5 minutes"), 5, "'x'", "window", "bad duration '5 minutes'"),
    ("zero window", bad("5m", "0"), 5, "'x'", "window", "longer than 0"),
    ("missing field", bad('    message_template: "failed: {task_name}"\n', ""), 2, "'x'",
     "message_template", "missing"),
    ("non-mapping rule", "rules:\n  - just a string\n", 2, "#1", "rules",
     "expected a mapping of fields, got a single value"),
    ("duplicate name", RULE + RULE.split("\n", 1)[1], 8, "'x'", "name",
     "duplicate rule name (first defined at line 2)"),
    ("yaml syntax error", bad("[log]", "[log"), 7, None, None, "not valid YAML"),
    ("python object tag", bad("threshold: 1", "threshold: !!python/object/apply:os.getpid []"),
     4, "'x'", "threshold", "tag 'tag:yaml.org,2002:python/object/apply:os.getpid' is not allowed"),
    ("custom tag", bad("[log]", "!channels [log]"), 6, "'x'", "channels", "is not allowed"),
    ("unknown field", bad("threshold: 1", "treshold: 1"), 4, "'x'", "treshold",
     "unknown field 'treshold'; known: name, condition, threshold"),
    ("field given twice", bad("threshold: 1", "threshold: 1\n    threshold: 2"), 5, "'x'",
     "threshold", "given twice"),
    ("negative threshold", bad("threshold: 1", "threshold: -1"), 4, "'x'", "threshold", ">= 0"),
    ("rate as a percentage", bad("task_failure", "failure_rate").replace("threshold: 1",
     "threshold: 10"), 4, "'x'", "threshold", "0.1 means 10 %"),
    ("unbalanced template", bad('"failed: {task_name}"', '"failed: {task_name"'), 7, "'x'",
     "message_template", "unbalanced braces"),
    ("unknown severity", RULE + "    severity: loud\n", 8, "'x'", "severity",
     "unknown severity 'loud'; known: info, warning, critical"),
    ("labels not text", RULE + "    labels: {team: [a]}\n", 8, "'x'", "labels", "strings"),
    ("name not text", bad("name: x", "name: [x]"), 2, "#1", "name", "non-empty string"),
    ("rules not a list", "rules: {name: x}\n", 1, None, "rules", "followed by a list"),
    ("unknown top-level key", RULE + "extra: 1\n", 8, None, "extra", "unknown top-level key"),
    ("top level a list", "- rules\n", 1, None, None, "expected a mapping"),
    ("two documents", RULE + "---\n" + RULE, 8, None, None, "not valid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [(case[1], case[2:]) for case in BAD_INPUTS],
    ids=[str(case[0]) for case in BAD_INPUTS],
)
def test_each_bad_input_is_refused_naming_file_line_rule_and_field(
    tmp_path: Path, text: str, expected: tuple[int, str | None, str | None, str]
) -> None:
    line, rule, field, words = expected
    path = write(tmp_path, text)
    with pytest.raises(RuleFileError) as err:
        load_rules_file(path)

    assert (err.value.source, err.value.line, err.value.rule, err.value.field) == (
        str(path),
        line,
        rule,
        field,
    )
    where = f"{path} line {line}" + (f", rule {rule}" if rule else "")
    where += f", field '{field}'" if field else ""
    assert str(err.value).startswith(where + ": ")
    assert words in str(err.value)
    assert isinstance(err.value, ValueError)


def test_the_message_reads_as_the_example_in_the_brief() -> None:
    with pytest.raises(RuleFileError) as err:
        parse_rules(bad("task_failure", "foo"), source="alerts.yaml")
    assert str(err.value) == (
        "alerts.yaml line 3, rule 'x', field 'condition': unknown condition 'foo'; known: "
        + ", ".join(CONDITIONS)
    )


def test_a_python_tag_is_refused_before_anything_is_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "constructed"
    text = bad("threshold: 1", f"threshold: !!python/object/apply:pathlib.Path.touch ['{marker}']")
    with pytest.raises(RuleFileError, match="is not allowed"):
        parse_rules(text)
    assert not marker.exists()


def test_an_alias_bomb_is_refused_without_being_expanded() -> None:
    anchors = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    anchors += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = RULE + "    labels:\n" + "".join(f"      {a}\n" for a in anchors)
    started = time.perf_counter()
    with pytest.raises(RuleFileError) as err:
        parse_rules(text)
    assert err.value.field == "labels"
    assert time.perf_counter() - started < 5  # 9**9 strings if it were expanded


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match=r"line 1: empty file"):
        load_rules_file(write(tmp_path, "# nothing yet\n"))


def test_a_missing_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(RuleFileError, match="cannot read the file") as err:
        load_rules_file(path)
    assert str(err.value).startswith(str(path))


def test_channels_the_integrator_adds_are_accepted_when_named() -> None:
    text = bad("[log]", "[pager]")
    with pytest.raises(RuleFileError, match="unknown channel 'pager'"):
        parse_rules(text)
    assert parse_rules(text, channels=("log", "pager"))[0].channels == ["pager"]
