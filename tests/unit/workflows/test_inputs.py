"""A definition given as Python data, checked as the compact JSON it will be stored as."""

from __future__ import annotations

import json
from collections import OrderedDict
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from personal_assistant.workers.workflows.inputs import (
    MAX_DEPTH,
    DefinitionTooLarge,
    Refused,
    describe,
    plain_copy,
)
from tests.support.workflow_inputs import shared_list_bomb


def json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def too_large(value: Any, max_bytes: int = 1024) -> str:
    with pytest.raises(DefinitionTooLarge) as caught:
        plain_copy(value, max_bytes)
    return str(caught.value)


plain_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**18) + 1, 10**18 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=40,
)


@given(plain_json)
def test_plain_data_is_copied_whole_and_measured_as_its_compact_json(value: Any) -> None:
    size = json_bytes(value)
    copied, problems = plain_copy(value, size)
    assert copied == value
    assert problems == []
    with pytest.raises(DefinitionTooLarge):
        plain_copy(value, size - 1)


def test_the_copy_is_independent_of_the_callers_objects() -> None:
    args = [1, {"k": ["v"]}]
    copied, _ = plain_copy({"args": args}, 1024)
    args[1]["k"].append("changed")  # type: ignore[index]
    assert copied == {"args": [1, {"k": ["v"]}]}


def test_tuples_mapping_types_and_subclasses_become_plain_json_types() -> None:
    class Level(IntEnum):
        HIGH = 9

    copied, problems = plain_copy(OrderedDict(a=(1, 2), b=Level.HIGH), 1024)
    assert problems == []
    assert copied == {"a": [1, 2], "b": 9}
    assert type(copied) is dict
    assert type(copied["b"]) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("inf"), "tasks.a.args[0]: inf is not a finite number"),
        (float("-inf"), "tasks.a.args[0]: -inf is not a finite number"),
        (float("nan"), "tasks.a.args[0]: nan is not a finite number"),
        (10**5000, "tasks.a.args[0]: <an integer of about 5,001 digits> has more than 18 digits"),
        (10**18, "tasks.a.args[0]: 1000000000000000000 has more than 18 digits"),
        ({1, 2}, "tasks.a.args[0]: <set of 2> is not JSON data"),
        (b"bytes", "tasks.a.args[0]: <bytes> is not JSON data"),
        (object(), "tasks.a.args[0]: <object> is not JSON data"),
        ("\ud800", "tasks.a.args[0]: a string holding a lone surrogate is not valid Unicode"),
        ({1: "x"}, "tasks.a.args[0]: the key 1 is not a string"),
        ({(1, 2): "x"}, "tasks.a.args[0]: the key <tuple of 2> is not a string"),
        ({None: "x"}, "tasks.a.args[0]: the key None is not a string"),
        (
            {10**5000: "x"},
            "tasks.a.args[0]: the key <an integer of about 5,001 digits> is not a string",
        ),
    ],
    ids=[
        "inf",
        "minus-inf",
        "nan",
        "5000-digit-int",
        "19-digit-int",
        "set",
        "bytes",
        "object",
        "lone-surrogate",
        "int-key",
        "tuple-key",
        "none-key",
        "huge-int-key",
    ],
)
def test_a_value_json_cannot_hold_is_reported_with_its_path(value: Any, expected: str) -> None:
    _, problems = plain_copy({"tasks": {"a": {"args": [value]}}}, 10_000)
    assert len(problems) == 1
    assert problems[0].startswith(expected)
    assert len(problems[0]) < 200


def test_a_refused_value_stands_in_the_copy_as_a_marker_named_like_the_value() -> None:
    copied, _ = plain_copy({"deadline": float("inf"), 7: "x"}, 1024)
    assert isinstance(copied["deadline"], Refused)
    assert repr(copied["deadline"]) == "inf"
    assert [str(k) for k in copied] == ["deadline", "7"]
    assert describe(copied["deadline"]) == "inf"


def test_every_problem_is_reported_not_only_the_first() -> None:
    _, problems = plain_copy({"a": float("nan"), "b": [1, {2: 3}], "c": {4, 5}}, 1024)
    assert problems == [
        "a: nan is not a finite number",
        "b[1]: the key 2 is not a string",
        "c: <set of 2> is not JSON data (null, bool, number, string, list, mapping)",
    ]


def test_nesting_deeper_than_the_limit_is_refused_with_a_clipped_path() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    message = too_large({"tasks": value}, 10**6)
    assert message.endswith(f"nested deeper than {MAX_DEPTH} levels")
    assert message.startswith("tasks[0][0]")
    assert len(message) < 200


def test_nesting_at_the_limit_is_accepted() -> None:
    value: list[Any] = []
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    copied, problems = plain_copy(value, 1024)
    assert copied == value
    assert problems == []


def test_a_mapping_that_holds_itself_is_refused_not_walked_forever() -> None:
    loop: dict[str, Any] = {}
    loop["again"] = loop
    assert "nested deeper than" in too_large({"tasks": loop})


def test_shared_lists_are_measured_as_their_serialisation_and_refused_at_the_limit() -> None:
    message = too_large({"tasks": {"a": {"args": shared_list_bomb()}}}, 1024 * 1024)
    assert message == "the definition is larger than the limit of 1,048,576 bytes (as JSON)"


def test_a_long_list_is_refused_before_its_values_are_walked() -> None:
    assert "larger than the limit of 1,024 bytes" in too_large([0] * 10_000_000)


def test_a_long_string_is_refused_by_its_length() -> None:
    assert "larger than the limit of 1,024 bytes" in too_large({"s": "é" * 10_000_000})


def test_non_ascii_text_is_measured_in_utf8_bytes() -> None:
    value = {"s": "é€😀", "k\n": '"\\'}
    size = json_bytes(value)
    assert plain_copy(value, size)[0] == value
    with pytest.raises(DefinitionTooLarge):
        plain_copy(value, size - 1)
