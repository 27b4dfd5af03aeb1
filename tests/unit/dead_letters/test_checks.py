"""What a dead-letter entry must be before it is read as one: strict, one line per refusal,
never a traceback, whatever bytes someone with access to Redis wrote."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from personal_assistant.workers.dead_letters.checks import DLQ_MAX_ARGS_BYTES
from personal_assistant.workers.dead_letters.queue import DeadLetter, UnreadableDeadLetter
from tests.support.dead_letters import MISSING, fields_of, letter


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json at all", "not JSON"),
        (b"\xff\xfe{", "not JSON"),
        ("[" * 100_000, "not JSON"),
        ('["a list"]', "not a JSON object but a list"),
        ("null", "not a JSON object but null"),
    ],
    ids=["text", "invalid-utf8", "deep-nesting", "a-list", "null"],
)
def test_an_entry_that_is_not_a_json_object_is_unreadable(raw: str | bytes, reason: str) -> None:
    with pytest.raises(UnreadableDeadLetter, match=reason) as caught:
        DeadLetter.from_json(raw, letter_id="abc")

    assert caught.value.letter_id == "abc"
    assert str(caught.value).startswith("dead letter abc is unreadable: ")


@pytest.mark.parametrize("field_name", ["task_name", "args", "kwargs", "traceback", "failed_at"])
def test_an_entry_missing_a_required_field_is_unreadable_naming_it(field_name: str) -> None:
    raw = fields_of(letter(1), **{field_name: MISSING})

    with pytest.raises(UnreadableDeadLetter, match=f"missing field {field_name}"):
        DeadLetter.from_json(raw)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"args": "rm -rf /"}, "args must be a list, not a string"),
        ({"args": {"a": 1}}, "args must be a list, not a mapping"),
        ({"kwargs": [1, 2]}, "kwargs must be a mapping, not a list"),
        ({"task_name": ""}, "task_name must be a non-empty string"),
        ({"task_name": 7}, "task_name must be a non-empty string"),
        ({"task_id": None}, "task_id must be a string, not null"),
        ({"queue": 3}, "queue must be a string, not an integer"),
        ({"priority": True}, "priority must be an integer, not a boolean"),
        ({"priority": "9"}, "priority must be an integer, not a string"),
        ({"retries": -1}, "retries must be a non-negative integer"),
        ({"retries": 1.5}, "retries must be a non-negative integer"),
        ({"failed_at": "yesterday"}, "failed_at must be a time from 1970 to 9999"),
        ({"failed_at": 1e20}, "failed_at must be a time from 1970 to 9999"),
        ({"failed_at": 10**400}, "failed_at must be a time from 1970 to 9999"),
        ({"reason": ["x"]}, "reason must be a string, not a list"),
        ({"id": "someone-else"}, "id 'someone-else' is not the key it is stored under"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v)),
)
def test_an_entry_with_a_field_of_the_wrong_type_is_unreadable_naming_it(
    changes: dict[str, Any], reason: str
) -> None:
    original = letter(1)
    raw = fields_of(original, **changes)

    with pytest.raises(UnreadableDeadLetter, match=reason):
        DeadLetter.from_json(raw, letter_id=original.id)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_failure_time_that_is_not_finite_is_unreadable(number: str) -> None:
    raw = fields_of(letter(1), failed_at=0).replace('"failed_at": 0', f'"failed_at": {number}')

    with pytest.raises(UnreadableDeadLetter):
        DeadLetter.from_json(raw)


def test_arguments_over_the_size_limit_are_unreadable_naming_the_limit() -> None:
    raw = fields_of(letter(1), args=["x" * DLQ_MAX_ARGS_BYTES])

    with pytest.raises(UnreadableDeadLetter, match=f"over the limit of {DLQ_MAX_ARGS_BYTES}"):
        DeadLetter.from_json(raw)


def test_every_problem_of_an_entry_is_named_on_one_line() -> None:
    raw = fields_of(letter(1), args="x", kwargs="y", task_name=MISSING)

    with pytest.raises(UnreadableDeadLetter) as caught:
        DeadLetter.from_json(raw)

    message = str(caught.value)
    assert "\n" not in message
    for part in ("missing field task_name", "args must be a list", "kwargs must be a mapping"):
        assert part in message


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_read_as_a_dead_letter_or_as_unreadable_never_another_error(raw: bytes) -> None:
    try:
        read = DeadLetter.from_json(raw, letter_id="x")
    except UnreadableDeadLetter as exc:
        assert exc.letter_id == "x"
        assert "\n" not in str(exc)
    else:
        assert read.id == "x"


@given(st.sampled_from(sorted(DeadLetter.__dataclass_fields__)), JSON_VALUES)
def test_an_entry_with_any_value_in_one_field_reads_with_its_types_or_is_unreadable(
    name: str, value: Any
) -> None:
    original = letter(1)
    try:
        read = DeadLetter.from_json(fields_of(original, **{name: value}), letter_id=original.id)
    except UnreadableDeadLetter:
        return
    assert isinstance(read.args, list)
    assert isinstance(read.kwargs, dict)
    assert isinstance(read.task_name, str) and read.task_name
    assert read.priority is None or type(read.priority) is int
    assert type(read.retries) is int and read.retries >= 0
    assert 0 <= read.failed_at <= 253_402_300_799
