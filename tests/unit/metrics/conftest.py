"""Fixtures of the metrics tests: a real child process standing in for a pool child."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child that burns 0.3 s of CPU, then sleeps until killed (yielded once it runs Python,
    so its memory is an interpreter's, not a process half-way through exec)."""
    code = "print('up', flush=True)\n" + BURN.format(seconds=0.3) + "time.sleep(60)\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"up\n"
    yield process
    process.stdout.close()
    process.kill()
    process.wait()
