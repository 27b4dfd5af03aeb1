"""Benchmarks: run by ``make bench``, never by ``make test``; each compares with an anchor
measured in the same run (``../shared/anchors``), since absolute times on this machine are noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

# One definition of a figure, in the report's writer (tools/, on sys.path from tests/conftest.py):
# what a benchmark records is what the report reads back.
from bench_report import Recorded as Figure

from tests.support.worker import REPO

__all__ = ["RESULTS_ENV", "Figure", "anchors", "record", "report", "run_anchor"]

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


# Where record() appends its figures, one JSON object a line: tools/bench.py (``make bench``)
# sets it and writes bench-report.md from the file; a benchmark run by plain pytest prints only.
RESULTS_ENV = "PA_BENCH_RESULTS"


def record(figure: Figure) -> Figure:
    """Print ``figure`` for the bench log and, under ``make bench``, append it to the results
    file the report is written from. Returns it, so a test can assert on it afterwards."""
    ratio = f" = {figure.ratio:.3f}x" if figure.ratio is not None else ""
    anchor = f" vs {figure.anchor_name} {figure.anchor:g}" if figure.anchor is not None else ""
    verdict = "" if figure.met is None else (" (met)" if figure.met else " (NOT met)")
    report(
        f"{figure.benchmark}: {figure.measure}: {figure.ours:g} {figure.unit}{anchor}{ratio}"
        f" target {figure.target or '-'}{verdict}; {figure.detail}"
    )
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(figure)) + "\n")
    return figure


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Benchmarks run longer than the unit suite's per-test timeout allows."""
    for item in items:
        if "performance" in str(item.fspath) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(1800))
