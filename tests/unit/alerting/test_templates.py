"""Alert message templates: fields filled, gaps visible, nothing evaluated, nothing raised."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.templates import (
    CUT_MARKER,
    MAX_FORMAT_PRECISION,
    MAX_FORMAT_WIDTH,
    MAX_LIST_ITEMS,
    MAX_VALUE_CHARS,
    Alert,
    fingerprint,
    render,
    validate,
)

MARKER = CUT_MARKER.format(limit=c.ALERT_MESSAGE_MAX_CHARS)
# 1.5 MB: 99.9 MB of message if each field were padded to 999 characters.
WIDE_SPECS = "{count:999.99f}" * 100_000


class Spy:
    """A field value that records every way a renderer could poke at it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __str__(self) -> str:
        self.calls.append("str")
        return "spy"

    def __repr__(self) -> str:
        self.calls.append("repr")
        return "Spy()"

    def __format__(self, spec: str) -> str:
        self.calls.append(f"format:{spec}")
        return "spy"

    def __getitem__(self, key: Any) -> str:
        self.calls.append(f"getitem:{key}")
        return "item"

    def __getattr__(self, name: str) -> str:
        self.calls.append(f"getattr:{name}")
        return "attr"


def test_named_fields_are_filled_from_the_alert() -> None:
    message = render("{count} failures of {task_name} in {window}", {
        "count": 5, "task_name": "send_email", "window": "5m",
    })  # fmt: skip
    assert message == "5 failures of send_email in 5m"


def test_the_seeds_rate_template_reads_as_a_percentage() -> None:
    assert render("Task failure rate is {rate}%", {"rate": 40.0}) == "Task failure rate is 40%"
    assert render("Task failure rate is {rate}%", {"rate": 33.3}) == "Task failure rate is 33.3%"


def test_a_missing_field_leaves_a_visible_placeholder() -> None:
    assert render("Task failed: {task_name}", {}) == "Task failed: {task_name?}"


def test_a_field_whose_value_is_none_counts_as_missing() -> None:
    assert render("error: {error}", {"error": None}) == "error: {error?}"


@pytest.mark.parametrize(
    "template",
    ["{x.__class__}", "{x[0]}", "{0}", "{x!r}", "{}", "{x.__init__.__globals__}", "{x!s:>10}"],
)
def test_attribute_access_indexing_positions_and_conversions_are_shown_literally(
    template: str,
) -> None:
    spy = Spy()
    assert render(f"before {template} after", {"x": spy, "0": spy}) == f"before {template} after"
    assert spy.calls == []


def test_a_huge_format_width_is_ignored_rather_than_allocated() -> None:
    assert render("{x:>999999999}", {"x": 5}) == "5"
    assert render("{x:>999999999}", {"x": "text"}) == "text"


def test_a_safe_format_spec_applies_to_numbers() -> None:
    assert render("{rate:.1f}%", {"rate": 33.3333}) == "33.3%"
    assert render("[{n:>5}]", {"n": 42}) == "[   42]"
    assert render("{n:,}", {"n": 1234567}) == "1,234,567"


def test_a_format_spec_on_text_or_an_unusable_type_renders_the_plain_value() -> None:
    spy = Spy()
    assert render("{name:>8}", {"name": "abc"}) == "abc"
    assert render("{n:d}", {"n": 2.5}) == "2.5"
    assert render("{s:>4}", {"s": spy}) == "spy"
    assert spy.calls == ["str"]  # shown with str(), never with its own __format__


def test_doubled_braces_are_literal_braces() -> None:
    assert render("{{count}} is {count}", {"count": 3}) == "{count} is 3"


@pytest.mark.parametrize("template", ["{count", "count}", "{a{b}", "}{", "a } b"])
def test_unbalanced_braces_render_literally_without_raising(template: str) -> None:
    rendered = render(template, {"count": 1, "a": 1, "b": 2})
    assert "{" in rendered or "}" in rendered


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("Task {task_name failed", "unclosed '{'"),
        ("Task task_name} failed", "single '}'"),
        ("{a{b}", "unclosed '{'"),
    ],
)
def test_validate_refuses_unbalanced_braces(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match="unbalanced braces") as err:
        validate(template)
    assert problem in str(err.value)


def test_a_template_of_repeated_wide_format_specs_is_refused_when_the_rule_is_loaded() -> None:
    with pytest.raises(ValueError) as err:
        validate(WIDE_SPECS)
    message = str(err.value)
    assert message.startswith(
        f"format spec too large: '{{count:999.99f}}' (a width is at most {MAX_FORMAT_WIDTH} and"
        f" a precision at most {MAX_FORMAT_PRECISION})"
    )
    assert "... and 99981 more problems" in message
    assert f"over the message limit of {c.ALERT_MESSAGE_MAX_CHARS:,}" in message
    assert len(message) < 3000


def test_the_same_template_renders_at_most_the_message_cap_with_a_marker() -> None:
    tracemalloc.start()
    try:
        message = render(WIDE_SPECS, {"count": 1.0})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(message) == c.ALERT_MESSAGE_MAX_CHARS
    assert message.endswith(MARKER)
    assert peak < 2 * 1024 * 1024  # filling stops at the cap: nothing larger is built


def test_long_values_in_many_fields_stop_at_the_cap() -> None:
    message = render("{error} " * 5000, {"error": "e" * (5 * MAX_VALUE_CHARS)})
    assert len(message) == c.ALERT_MESSAGE_MAX_CHARS
    assert message.endswith(MARKER)


def test_a_message_under_the_cap_is_not_marked() -> None:
    message = render("x" * (c.ALERT_MESSAGE_MAX_CHARS - 1) + "{n}", {"n": 7})
    assert message == "x" * (c.ALERT_MESSAGE_MAX_CHARS - 1) + "7"


@pytest.mark.parametrize(
    "template",
    ["{x:101}", "{x:.21f}", "{x:>999999999}", "{x:0999}", "{x:_^500}", "{x:,.99}", "{x:1000d}"],
)
def test_a_format_width_or_precision_over_its_bound_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="format spec too large"):
        validate(f"value: {template}")


def test_format_specs_within_the_bounds_are_accepted_and_applied() -> None:
    template = f"{{x:>{MAX_FORMAT_WIDTH}.{MAX_FORMAT_PRECISION}f}}"
    assert validate(template) == ("x",)
    assert len(render(template, {"x": 1.5})) == MAX_FORMAT_WIDTH
    assert render("{x:.2f}", {"x": 1 / 3}) == "0.33"


def test_a_template_longer_than_a_message_is_refused() -> None:
    with pytest.raises(ValueError, match="over the message limit"):
        validate("x" * (c.ALERT_MESSAGE_MAX_CHARS + 1))


def test_the_problem_list_of_a_template_is_clipped_with_a_count() -> None:
    with pytest.raises(ValueError) as err:
        validate("x}" * 10_000)
    assert "... and 9981 more problems" in str(err.value)
    assert len(str(err.value)) < 3000


def test_validate_returns_the_field_names_of_a_balanced_template() -> None:
    names = validate("{{literal}} {count} of {task_name:>10} {x.y}")
    assert names == ("count", "task_name")


def test_validate_refuses_a_template_that_is_not_text() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        validate(42)  # type: ignore[arg-type]


def test_long_values_are_cut_and_say_how_much() -> None:
    message = render("{error}", {"error": "x" * (MAX_VALUE_CHARS + 500)})
    assert message.startswith("x" * MAX_VALUE_CHARS)
    assert message.endswith("... [500 chars cut]")


def test_lists_are_joined_and_capped() -> None:
    ids = [f"id{i}" for i in range(MAX_LIST_ITEMS + 3)]
    message = render("{task_ids}", {"task_ids": ids})
    assert message.startswith("id0, id1, ")
    assert message.endswith(f"id{MAX_LIST_ITEMS - 1} (+3 more)")


def test_numbers_read_without_float_noise() -> None:
    assert render("{a} {b} {c} {d}", {"a": 5.0, "b": 0.1 + 0.2, "c": True, "d": 0.0001}) == (
        "5 0.3 yes 0.0001"
    )


def test_a_fingerprint_depends_on_the_rule_and_labels_not_their_order() -> None:
    first = fingerprint("r", {"a": "1", "b": "2"})
    assert first == fingerprint("r", {"b": "2", "a": "1"})
    assert first != fingerprint("r", {"a": "1", "b": "3"})
    assert first != fingerprint("other", {"a": "1", "b": "2"})


def test_an_alert_becomes_a_plain_dict() -> None:
    alert = Alert("r", "firing", "warning", {"a": "1"}, {"count": 2}, "m", "fp", 1.0, ["log"])
    assert alert.to_dict() == {
        "rule": "r", "state": "firing", "severity": "warning", "labels": {"a": "1"},
        "fields": {"count": 2}, "message": "m", "fingerprint": "fp", "timestamp": 1.0,
        "channels": ["log"],
    }  # fmt: skip
