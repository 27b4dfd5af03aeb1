"""``workflow submit`` on hostile files: one line, exit 64 (EX_USAGE), nothing read past the
cap; ``workflow list --since`` refuses what is not a time the same way."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner, Result

from personal_assistant.workers.cli.terminal import EX_USAGE
from personal_assistant.workers.cli.workflow_command import workflow
from tests.support.workflow_inputs import ALIAS_BOMB, alias_bomb_workflow


def submit(path: Path | str) -> Result:
    """``workflow submit PATH`` with no app: a file that fails to load never needs one."""
    return CliRunner().invoke(workflow, ["submit", str(path)], obj=SimpleNamespace(app=None))


def assert_one_line_error(result: Result, expected: str) -> None:
    assert result.exit_code == EX_USAGE
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr == f"Error: invalid workflow: {expected}\n"


def test_submitting_dev_zero_ends_at_once_with_one_line() -> None:
    assert_one_line_error(submit("/dev/zero"), "/dev/zero: not a regular file")


@pytest.mark.parametrize("text", [ALIAS_BOMB, alias_bomb_workflow()], ids=["bare", "in-kwargs"])
def test_submitting_an_alias_bomb_ends_at_once_with_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    result = submit(path)
    assert result.stderr.count("\n") == 1
    assert "aliases (*name) are not allowed" in result.stderr
    assert result.exit_code == EX_USAGE


def test_submitting_a_file_over_the_size_limit_names_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (2 * 1024 * 1024))
    assert_one_line_error(submit(path), f"{path}: larger than the limit of 1,048,576 bytes")


def test_submitting_a_file_with_an_infinite_deadline_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("name: x\ndeadline: .inf\n")
    assert_one_line_error(submit(path), f"{path}: line 2: '.inf' is not a finite number")


def test_submitting_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(b"name: x\n\nname2: \xff\n")
    assert_one_line_error(submit(path), f"{path}: line 3: not UTF-8 (byte 0xff)")


def test_a_control_character_is_one_line_naming_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(b"name: x\ntasks:\n  a: \x07\n")
    assert_one_line_error(
        submit(path),
        f"{path}: line 3, column 6: character #x0007: control characters are not allowed",
    )


@pytest.mark.parametrize("since", ["yesterday", "5 parsecs", "1y", "2026-13-01", "x" * 10_000])
def test_a_since_that_is_not_a_duration_or_a_time_is_one_line_and_exit_64(since: str) -> None:
    result = CliRunner().invoke(workflow, ["list", "--since", since], obj=SimpleNamespace(app=None))
    assert result.exit_code == EX_USAGE
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: --since: ")
    assert "30m, 1h, 2d" in result.stderr
    assert len(result.stderr) < 300
