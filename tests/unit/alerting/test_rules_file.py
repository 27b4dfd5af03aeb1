"""Alert rules read from YAML: a good file loads, every bad one names file, line and field."""

from __future__ import annotations

import textwrap
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.manager import AlertManager
from personal_assistant.workers.alerting.rules_file import (
    CONDITIONS,
    AlertRule,
    RuleFileError,
    load_rules_file,
    parse_rules,
)

T = TypeVar("T")
MB = 1024 * 1024

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
    ("yaml syntax error", bad("[log]", "[log"), 7, None, None, "did not find expected ',' or ']'"),
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
    ("two documents", RULE + "---\n" + RULE, 8, None, None, "one document only"),
    ("5,000-digit threshold", bad("threshold: 1", "threshold: " + "9" * 5000), 4, "'x'",
     "threshold", "has more than 18 digits"),
    ("infinite threshold", bad("threshold: 1", "threshold: .inf"), 4, "'x'", "threshold",
     "'.inf' is not a finite number"),
    ("NaN multiple",
     bad("task_failure", "performance_degradation") + "    baseline_multiple: .nan\n", 8,
     "'x'", "baseline_multiple", "'.nan' is not a finite number"),
    ("infinite window", bad("5m", "-.inf"), 5, "'x'", "window", "'-.inf' is not a finite number"),
    ("unhashable field name", RULE + "    ? [a, b]\n    : 1\n", 8, "'x'", "rules",
     "a field name must be a single value"),
    ("unhashable label key", RULE + "    labels: {? [a, b] : c}\n", 8, "'x'", "labels",
     "a key must be a single value"),
    ("deep nesting", RULE + "    labels: " + "[" * 100_000 + "]" * 100_000 + "\n", 8, None,
     None, "nesting depth"),
    ("nesting past the cap", RULE + "    labels: " + "[" * 40 + "]" * 40 + "\n", 8, None,
     None, "nested deeper than 32 levels"),
    ("a format spec that blows up", bad('"failed: {task_name}"', '"{count:999.99f}"'), 7, "'x'",
     "message_template", "format spec too large: '{count:999.99f}'"),
    ("an anchor's alias", bad("[log]", "&c [log]") + "    labels: *c\n", 8, None, None,
     "aliases (*name) are not allowed"),
]  # fmt: skip

# Values a message shows are cut: (name, file text, words the message must contain).
HUGE = "Z" * 100_000
HUGE_INPUTS: list[tuple[str, str, str]] = [
    ("condition", bad("task_failure", HUGE), "unknown condition 'ZZZ"),
    ("field name", bad("threshold: 1", f"? {HUGE}\n    : 1"), "unknown field 'ZZZ"),
    ("rule name", bad("name: x", "name: " + HUGE).replace("[log]", "[sms]"), "rule 'ZZZ"),
    ("channel", bad("[log]", f"[{HUGE}]"), "unknown channel 'ZZZ"),
    ("duration", bad("5m", HUGE), "bad duration 'ZZZ"),
    ("severity", RULE + f"    severity: {HUGE}\n", "unknown severity 'ZZZ"),
    ("group_by key", RULE + f"    group_by: [{HUGE}]\n", "unknown group_by key 'ZZZ"),
    ("template", bad('"failed: {task_name}"', "'" + "x}" * 50_000 + "'"), "more problems"),
    ("label value", RULE + f"    labels: {{team: [{HUGE}]}}\n", "must map strings to strings"),
    ("field given twice", RULE + f"    ? {HUGE}\n    : 1\n    ? {HUGE}\n    : 2\n", "given twice"),
]


@pytest.mark.parametrize(
    ("text", "words"),
    [case[1:] for case in HUGE_INPUTS],
    ids=[case[0] for case in HUGE_INPUTS],
)
def test_values_shown_in_an_error_are_cut_short(text: str, words: str) -> None:
    with pytest.raises(RuleFileError) as err:
        parse_rules(text, source="alerts.yaml")
    message = str(err.value)
    assert words in message
    assert len(message) < 3000, message[:200]


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


def peak_memory(run: Callable[[], T]) -> tuple[T | BaseException, int]:
    """What ``run`` returned or raised, and the peak of memory it allocated (tracemalloc)."""
    tracemalloc.start()
    try:
        try:
            outcome: T | BaseException = run()
        except BaseException as exc:  # handed back for the test to judge
            outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Nine lists of nine aliases of the one before: 9**9 strings if anything expanded it (the
# channels check of the old reader printed its repr: MemoryError after 28 s).
ALIAS_TRICK = (
    "rules:\n  - name: x\n    condition: task_failure\n    threshold: 1\n    window: 5m\n"
    "    message_template: m\n    labels:\n      a0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol]\n"
    + "".join(f"      a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
    + "    channels: *a8\n"
)


def test_the_alias_trick_ends_at_once_naming_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, ALIAS_TRICK)
    assert path.stat().st_size < 600
    outcome, peak = peak_memory(lambda: load_rules_file(path))
    assert isinstance(outcome, RuleFileError)
    assert str(outcome) == f"{path} line 9: aliases (*name) are not allowed: write the value out"
    assert peak < 5 * MB


def test_a_file_over_the_size_limit_is_refused_naming_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "#" * c.ALERT_RULES_MAX_BYTES)
    with pytest.raises(RuleFileError) as err:
        load_rules_file(path)
    assert str(err.value) == f"{path}: larger than the limit of {c.ALERT_RULES_MAX_BYTES:,} bytes"
    with pytest.raises(RuleFileError, match="larger than the limit"):
        parse_rules(GOOD + "é" * (c.ALERT_RULES_MAX_BYTES // 2))  # counted in bytes, not chars


def test_a_device_is_refused_rather_than_read_forever() -> None:
    with pytest.raises(RuleFileError) as err:
        load_rules_file("/dev/zero")
    assert str(err.value) == "/dev/zero: not a regular file"


def test_invalid_utf8_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_bytes(RULE.replace("failed:", "failed \xff:").encode("latin-1"))
    with pytest.raises(RuleFileError) as err:
        load_rules_file(path)
    assert (err.value.line, err.value.reason) == (7, "not UTF-8 (byte 0xff)")


# Pieces of YAML that reach the parts of the reader past the parser: rules, fields, values.
PIECES = [
    "rules:\n", "  - ", "name: ", "condition: ", "task_failure", "threshold: ", "window: ",
    "for: ", "channels: ", "[log]", "message_template: ", '"{count:999.99f}"', "labels: ",
    "group_by: ", "baseline_multiple: ", "severity: ", "&a ", "*a", "[", "]", "{", "}", ": ",
    ", ", "\n", "    ", "? ", "!!python/object:os.system ", ".inf", ".nan", "1e400", "9" * 40,
    "5m", "-", "'", '"', "#", "---\n", "~", "\xff", "\t", "on", "0x1F", "!tag ", "<<: ",
]  # fmt: skip
YAML_LIKE = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=80).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogatepass")
)


def worst_cases(test: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """The inputs nearest each limit, tried before the generated ones."""
    filled = c.ALERT_RULES_MAX_BYTES - 10
    cases = [
        ALIAS_TRICK.encode(),
        b"[" * filled,  # nesting: libyaml's own cap, then ours
        b"rules:\n" + b"  - " * (filled // 4),
        b"[" + b"1," * (filled // 2) + b"]",  # past the value cap
        b"{" + b"a: 1," * (filled // 5) + b"}",
        RULE.replace('"failed: {task_name}"', "'" + "{a" * (filled // 2 - 100) + "'").encode(),
        RULE.replace('"failed: {task_name}"', "'" + "x}" * (filled // 2 - 100) + "'").encode(),
        RULE.replace('"failed: {task_name}"', "'" + "{n:999.99f}" * (filled // 12) + "'").encode(),
        RULE.replace("threshold: 1", "threshold: " + "9" * (filled - 200)).encode(),
        b"x" * (c.ALERT_RULES_MAX_BYTES + 1),
    ]
    for case in reversed(cases):
        test = example(case)(test)
    return test


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048), YAML_LIKE))
@worst_cases
def test_any_bytes_as_a_rules_file_end_in_rules_or_a_rule_file_error_within_2s(
    data: bytes,
) -> None:
    try:
        rules = parse_rules(data, source="fuzz.yaml")
    except RuleFileError as exc:
        assert str(exc).startswith("fuzz.yaml")
        assert len(str(exc)) < 3000
    else:
        assert all(isinstance(rule, AlertRule) for rule in rules)


# tracemalloc slows every allocation several times: measured apart from the 2 s deadline.
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048), YAML_LIKE))
@worst_cases
def test_any_bytes_as_a_rules_file_are_read_within_200_mb(data: bytes) -> None:
    outcome, peak = peak_memory(lambda: parse_rules(data, source="fuzz.yaml"))
    assert isinstance(outcome, (list, RuleFileError)), repr(outcome)[:500]
    assert peak < 200 * MB


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match=r"line 1: empty file"):
        load_rules_file(write(tmp_path, "# nothing yet\n"))


def test_a_missing_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(RuleFileError, match=r"cannot read it \(No such file") as err:
        load_rules_file(path)
    assert str(err.value).startswith(str(path))


def test_channels_the_integrator_adds_are_accepted_when_named() -> None:
    text = bad("[log]", "[pager]")
    with pytest.raises(RuleFileError, match="unknown channel 'pager'"):
        parse_rules(text)
    assert parse_rules(text, channels=("log", "pager"))[0].channels == ["pager"]
