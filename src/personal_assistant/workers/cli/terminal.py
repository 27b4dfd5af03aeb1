"""What every ops command shares with the terminal: the console, errors, exit codes, progress.

- :func:`console`: a rich console as wide as the terminal (``COLUMNS`` or the tty's size; 80
  when neither says), never a fixed width: tables wrap or truncate their columns to fit.
- Errors are one line each, naming what failed with passwords masked, and exit with Celery's
  codes (``celery.platforms``: 69 ``EX_UNAVAILABLE`` when the broker or another service cannot
  be reached, 64 ``EX_USAGE`` for a bad argument, 1 otherwise). The ops commands' group
  (ops_command.OpsGroup) turns a Redis connection error raised anywhere in a command into
  :class:`Unavailable`, so no command prints a traceback because Redis is down.
- :class:`ProgressLine`: one line updated in place on a terminal (a line per update when the
  output is a file or a pipe, so logs stay readable).
"""

from __future__ import annotations

import os
import sys
from typing import Final, TextIO

import click
from rich.console import Console

from personal_assistant.workers.config import mask_url

# Celery's exit codes (celery.platforms re-exports os's): a service could not be reached, a
# command line was wrong, anything else failed.
EX_FAILURE: Final = 1
EX_USAGE: Final = 64
EX_UNAVAILABLE: Final = 69


class CommandFailed(click.ClickException):
    """One line on stderr (click prints ``Error: ...``), passwords masked; exit 1."""

    exit_code = EX_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(one_line(mask_url(message)))


class Unavailable(CommandFailed):
    """A service the command needs cannot be reached: exit 69, as Celery's commands do."""

    exit_code = EX_UNAVAILABLE


class UsageError(CommandFailed):
    """A bad argument or input file (not click's own parsing errors, which exit 2): exit 64."""

    exit_code = EX_USAGE


def one_line(text: str) -> str:
    """``text`` on one line: line breaks become ' / ', so an error is one line in any log."""
    return " / ".join(part.strip() for part in text.splitlines() if part.strip()) or text


def console(file: TextIO | None = None) -> Console:
    """A console as wide as the terminal, for tables that must fit it."""
    return Console(file=file, soft_wrap=False, highlight=False)


class ProgressLine:
    """One progress line: rewritten in place on a terminal, a new line per change otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self._last = ""

    def width(self) -> int:
        """Columns of the terminal (COLUMNS first, as rich and click read it)."""
        try:
            return int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            try:
                return os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError):
                return 80

    def update(self, text: str) -> None:
        """Show ``text`` (cut to the terminal's width) in place of the previous line."""
        text = one_line(text)
        if text == self._last:
            return
        self._last = text
        if self.live:
            limit = max(10, self.width() - 1)
            shown = text if len(text) <= limit else text[: limit - 1] + "…"
            self.stream.write("\r\x1b[2K" + shown)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text: str | None = None) -> None:
        """End the line (with ``text`` as its last state)."""
        if text is not None:
            self.update(text)
        if self.live and self._last:
            self.stream.write("\n")
            self.stream.flush()
