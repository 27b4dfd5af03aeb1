"""An alert rule: what makes one valid (each refusal names its field), what a check may
report to it, and how its durations are written."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from personal_assistant.workers.alerting.manager import AlertManager
from personal_assistant.workers.alerting.rule import (
    CONDITIONS,
    KNOWN_CHANNELS,
    AlertRule,
    RuleError,
    parse_duration,
)
from tests.support.alert_rules import make_rule

# --- Validation: every rule, read from a file or built in Python ----------------------------------


def test_an_unknown_condition_is_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match="unknown condition 'foo'; known: ") as err:
        AlertManager().add_rule(make_rule(condition="foo"))
    assert all(condition in str(err.value) for condition in CONDITIONS)


def test_an_unknown_channel_is_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match="unknown channel 'sms'; known: ") as err:
        AlertManager().add_rule(make_rule(channels=["log", "sms"]))
    assert all(channel in str(err.value) for channel in KNOWN_CHANNELS)


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"threshold": -1}, "threshold", ">= 0"),
        ({"threshold": float("nan")}, "threshold", ">= 0"),
        ({"condition": "failure_rate", "threshold": 5}, "threshold", "0.1 means 10 %"),
        ({"window": timedelta(0)}, "window", "longer than 0"),
        ({"cooldown": timedelta(seconds=-1)}, "cooldown", ">= 0"),
        ({"severity": "loud"}, "severity", "known: info, warning, critical"),
        ({"message_template": "{task_name"}, "message_template", "unbalanced braces"),
        ({"channels": []}, "channels", "non-empty list"),
        ({"baseline_multiple": 2.0}, "baseline_multiple", "only for performance_degradation"),
        ({"group_by": ["color"]}, "group_by", "known: task_name, queue, hostname"),
        ({"name": ""}, "name", "non-empty string"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_naming_the_field(
    overrides: dict[str, Any], field: str, words: str
) -> None:
    manager = AlertManager()
    with pytest.raises(RuleError) as err:
        manager.add_rule(make_rule(**overrides))
    assert err.value.field == field
    assert words in str(err.value)
    assert manager.rules == []


def test_a_5000_digit_threshold_built_in_python_is_a_rule_error() -> None:
    rule = AlertRule("huge", "task_failure", 10**5000, timedelta(minutes=1), ["log"], "m")
    with pytest.raises(RuleError) as err:
        AlertManager().add_rule(rule)
    assert str(err.value) == (
        "rule 'huge', field 'threshold': must be a number >= 0, got <an integer of about 5,001"
        " digits>"
    )


# --- What a check reports -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metrics",
    [{"event": "task_exploded"}, {"failed_tasks": -1}, {"failed_tasks": "2"},
     {"tasks": {"t": {"p95": float("inf")}}}, {"queues": {"q": True}}, {"tasks": {"t": 3}}],
)  # fmt: skip
def test_metrics_that_make_no_sense_are_refused(metrics: dict[str, Any]) -> None:
    manager = AlertManager()
    manager.add_rule(make_rule())
    manager.add_rule(make_rule(name="q", condition="queue_backlog", threshold=1))
    with pytest.raises(ValueError, match=r"known: task_failed|must be a (number >= 0|mapping)"):
        manager.check_alerts(metrics)


# --- Durations ------------------------------------------------------------------------------------


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
