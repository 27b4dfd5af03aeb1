"""Commands run as an operator runs them: in a pseudo-terminal of a given size.

``run_in_terminal`` starts a command with its stdin, stdout and stderr on a pty of ``columns``
x ``rows`` (so rich, click and ``isatty`` see a real terminal of that width) and returns what
the terminal received and the exit code; ``screen_lines`` is that output as the operator saw it
(escape sequences removed, each line's last state after carriage returns).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# CSI sequences (colours, cursor moves, line clears) and OSC titles.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")


@dataclass(frozen=True)
class TerminalRun:
    """What a command printed to its terminal, and how it exited."""

    output: str
    exit_code: int

    def lines(self) -> list[str]:
        """The output as seen on screen: see :func:`screen_lines`."""
        return screen_lines(self.output)

    def widest(self) -> int:
        """Columns of the widest line on screen."""
        return max((len(line) for line in self.lines()), default=0)


def screen_lines(output: str) -> list[str]:
    """``output`` without escape sequences, each line as it was left (after its last ``\\r``),
    trailing blanks removed, empty lines dropped."""
    text = _ESCAPES.sub("", output).replace("\r\n", "\n")
    lines = [line.split("\r")[-1].rstrip() for line in text.split("\n")]
    return [line for line in lines if line]


def run_in_terminal(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    columns: int = 80,
    rows: int = 24,
    timeout: float = 60.0,
) -> TerminalRun:
    """Run ``args`` on a pseudo-terminal ``columns`` wide; return its output and exit code."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    clean = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        list(args), stdin=slave, stdout=slave, stderr=slave, env=clean, start_new_session=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{args} did not end within {timeout}s: {chunks!r}")
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the command closed the terminal (it exited)
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                break
            if process.poll() is not None and not select.select([master], [], [], 0.05)[0]:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
    return TerminalRun(b"".join(chunks).decode("utf-8", "replace"), code)
