"""What the ops commands share with the terminal: one-line errors, exit codes, one progress line."""

from __future__ import annotations

import io

from personal_assistant.workers.cli.terminal import (
    EX_UNAVAILABLE,
    EX_USAGE,
    CommandFailed,
    ProgressLine,
    Unavailable,
    UsageError,
    one_line,
)


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_an_error_is_one_line_with_its_password_masked() -> None:
    error = CommandFailed("cannot reach redis://:s3cret@db:6379/0\nConnection refused")
    assert error.message == "cannot reach redis://:****@db:6379/0 / Connection refused"
    assert "s3cret" not in error.format_message()


def test_exit_codes_are_celerys() -> None:
    assert (CommandFailed("x").exit_code, Unavailable("x").exit_code) == (1, EX_UNAVAILABLE)
    assert UsageError("x").exit_code == EX_USAGE == 64
    assert EX_UNAVAILABLE == 69


def test_one_line_keeps_a_single_line_as_it_is() -> None:
    assert one_line("all good") == "all good"
    assert one_line("a\n\n  b  \n") == "a / b"


def test_progress_on_a_terminal_rewrites_one_line_cut_to_its_width() -> None:
    stream = Terminal()
    line = ProgressLine(stream)
    line.width = lambda: 20  # type: ignore[method-assign]

    line.update("running 1/4")
    line.update("running 1/4")  # unchanged: nothing written
    line.update("running 2/4 with a long tail that does not fit")
    line.done()

    written = stream.getvalue()
    assert written.count("\r\x1b[2K") == 2
    assert written.endswith("\n")
    assert all(len(part) <= 20 for part in written.replace("\x1b[2K", "").split("\r"))


def test_progress_to_a_file_writes_a_line_per_change() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream)
    line.update("running 1/2")
    line.update("running 2/2")
    line.done("done 2/2")
    assert stream.getvalue() == "running 1/2\nrunning 2/2\ndone 2/2\n"
