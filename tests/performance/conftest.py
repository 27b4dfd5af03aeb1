"""Benchmarks: run by ``make bench``, never by ``make test``; each compares with an anchor
measured in the same run (``../shared/anchors``), since absolute times on this machine are noise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.worker import REPO

ANCHORS = REPO.parent / "shared" / "anchors"


@pytest.fixture(scope="session")
def anchors() -> Path:
    """The anchor scripts' folder (skips the benchmark, saying why, when it is missing)."""
    if not ANCHORS.is_dir():
        pytest.skip(f"anchor scripts not found at {ANCHORS}")
    return ANCHORS


def run_anchor(script: Path, *args: str, timeout: float = 600) -> str:
    """Run an anchor script with this interpreter; return what it printed."""
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"{script.name} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def report(line: str) -> None:
    """Print a result line for the bench log (pytest -s shows it)."""
    print(f"\nBENCH {line}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Benchmarks run longer than the unit suite's per-test timeout allows."""
    for item in items:
        if "performance" in str(item.fspath) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(1800))
