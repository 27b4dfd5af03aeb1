"""The bounded loader turns every hostile file into one error that names the file and the line."""

from __future__ import annotations

import contextlib
import os
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personal_assistant.workers import bounded_yaml
from personal_assistant.workers.bounded_yaml import (
    MAX_INT_DIGITS,
    InputFileError,
    Limits,
    clip_problems,
    load_yaml,
    load_yaml_file,
    read_user_file,
    short_repr,
)

# About 300 bytes that PyYAML's safe loader expands into hundreds of millions of strings (nine
# levels of nine aliases each).
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{name}: &{name} [{','.join(['*' + prev] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def refusal(data: bytes | str, source: str = "in.yaml", **limits: int) -> InputFileError:
    """The error loading ``data`` gives (the test fails if it loads)."""
    with pytest.raises(InputFileError) as caught:
        load_yaml(data, source, Limits(**limits))
    return caught.value


def test_plain_yaml_becomes_plain_data() -> None:
    text = "name: n\ncount: 3\nratio: 0.5\non: true\nnone: null\nwhen: 2024-01-01\nl: [1, a]\n"

    assert load_yaml(text, "in.yaml") == {
        "name": "n",
        "count": 3,
        "ratio": 0.5,
        "on": True,
        "none": None,
        "when": "2024-01-01",  # a string, as JSON would have it, not a date
        "l": [1, "a"],
    }


def test_an_empty_document_is_none() -> None:
    assert load_yaml(b"", "in.yaml") is None


def test_aliases_are_refused_before_anything_expands() -> None:
    error = refusal(ALIAS_BOMB)

    assert "aliases" in error.reason
    assert error.line == 2
    assert str(error).startswith("in.yaml: line 2:")


@pytest.mark.parametrize(
    ("data", "words", "line"),
    [
        (b"a:\n" + b"".join(b"  " * i + b"a:\n" for i in range(1, 40)), "nested deeper", 33),
        (b"[" * 100_000 + b"]" * 100_000, "nesting depth", 1),
        (b"deadline: .inf\n", "not a finite number", 1),
        (b"deadline: .nan\n", "not a finite number", 1),
        (b"threshold: 1.0e+400\n", "not a finite number", 1),
        (b"threshold: " + b"9" * 5000 + b"\n", f"more than {MAX_INT_DIGITS} digits", 1),
        (b"? [a, b]\n: 1\n", "a key must be a single value", 1),
        (b"a: 1\nb: 2\na: 3\n", "duplicate key 'a'", 3),
        (b"a: !!python/object:os.system x\n", "is not allowed", 1),
        (b"a: !custom x\n", "is not allowed", 1),
        (b"a: 1\n---\nb: 2\n", "one document only", 2),
        (b"x: \xff\xfe\n", "not UTF-8 (byte 0xff)", 1),
        (b"a: [1, 2\n", "expected", 2),
    ],
    ids=[
        "deep-mapping",
        "deep-flow",
        "inf",
        "nan",
        "overflowing-float",
        "5000-digit-int",
        "unhashable-key",
        "duplicate-key",
        "python-tag",
        "custom-tag",
        "two-documents",
        "not-utf8",
        "syntax",
    ],
)
def test_hostile_yaml_is_one_error_naming_the_line(data: bytes, words: str, line: int) -> None:
    error = refusal(data)

    assert words in error.reason
    assert error.line == line


@pytest.mark.parametrize("parser", ["libyaml", "pure-python"])
def test_a_forbidden_character_is_one_line_naming_the_file_line_and_column(
    parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if parser == "pure-python":  # its reader counts characters, libyaml's counts UTF-8 bytes
        monkeypatch.setattr(bounded_yaml, "_PARSER", yaml.SafeLoader)
    error = refusal("name: x\nn\u00e9\u00e9: \x07\n".encode(), source="flows/nightly.yaml")

    assert (error.line, error.column) == (2, 6)
    assert str(error).startswith("flows/nightly.yaml: line 2, column 6: character #x0007: ")
    assert "\n" not in str(error)
    assert "<unicode string>" not in str(error)


def test_a_syntax_error_names_the_line_and_the_column() -> None:
    error = refusal(b"tasks:\n  a: [1, 2\n  b: 3\n", source="wf.yaml")

    assert str(error).startswith("wf.yaml: line 3, column 4: ")


def test_too_many_values_are_refused() -> None:
    error = refusal(b"[" + b"1," * 2000 + b"1]", max_nodes=1000)

    assert "more than 1,000 values" in error.reason


def test_text_over_the_byte_limit_is_refused_before_parsing() -> None:
    error = refusal(b"a: 1\n" * 100, max_bytes=64)

    assert "larger than the limit of 64 bytes" in error.reason


def test_json_numbers_in_a_json_source_are_numbers() -> None:
    assert load_yaml('{"deadline": 1e3, "n": [1, 2.5]}', "wf.json") == {
        "deadline": 1000.0,
        "n": [1, 2.5],
    }


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ('{"deadline": Infinity}', "Infinity is not a finite number"),
        ('{"deadline": 1e400}', "not a finite number"),
        ('{"n": ' + "9" * 5000 + "}", "digits"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper"),
        ('{"a": [1, 2}', "Expecting"),
    ],
    ids=["infinity", "overflow", "huge-int", "duplicate", "deep", "syntax"],
)
def test_hostile_json_is_one_error(data: str, words: str) -> None:
    assert words in refusal(data, "wf.json").reason


def test_a_file_that_is_not_regular_is_refused() -> None:
    with pytest.raises(InputFileError, match="not a regular file"):
        read_user_file("/dev/zero")


def test_a_file_over_the_limit_is_refused_after_reading_one_byte_past_it(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"x" * 1000)

    with pytest.raises(InputFileError, match="larger than the limit of 999 bytes"):
        read_user_file(big, max_bytes=999)
    assert read_user_file(big, max_bytes=1000) == b"x" * 1000


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(InputFileError, match=r"nope\.yaml: cannot read it"):
        load_yaml_file(missing)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)

    with pytest.raises(InputFileError, match="not a regular file"):
        read_user_file(fifo)


def test_a_file_is_loaded_with_its_name_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("a: [1]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\n")

    assert load_yaml_file(good) == {"a": [1]}
    with pytest.raises(InputFileError, match=r"bad\.yaml: line 2: duplicate key"):
        load_yaml_file(bad)


def test_short_repr_never_prints_a_huge_value_whole() -> None:
    assert short_repr("x" * 10_000) == "'" + "x" * 78 + "…"
    assert short_repr(list(range(10_000))) == "<list of 10000>"
    assert short_repr(3) == "3"
    assert short_repr(10**5000) == "<an integer of about 5001 digits>"
    assert len(short_repr("y" * 500, 20)) == 20


def test_a_long_problem_list_is_clipped_with_a_count_of_the_rest() -> None:
    problems = [f"problem {i}" for i in range(50)]

    clipped = clip_problems(problems, 5)

    assert clipped == [*problems[:4], "... and 46 more problems"]
    assert clip_problems(problems[:3], 5) == problems[:3]


@settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.binary(max_size=4096))
def test_any_bytes_end_in_plain_data_or_one_input_error(data: bytes) -> None:
    tracemalloc.start()
    try:
        for source in ("any.yaml", "any.json"):
            with contextlib.suppress(InputFileError):
                load_yaml(data, source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 1024 * 1024
