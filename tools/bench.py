"""``make bench``: run the benchmarks (tests/performance/) with progress, and write
``bench-report.md`` from the figures they record.

Usage: ``python tools/bench.py [PYTEST ARGS...]``, e.g. ``-k beat`` or a file of
tests/performance/; pytest runs in a subprocess (``-s -p no:cacheprovider``) with
PA_BENCH_RESULTS set to a fresh file under var/bench/ (``record()`` appends each figure to it)
and this module loaded as a pytest plugin (``-p bench``), which writes one event a line
(collected, started, each phase's result, finished) to a second file that this process follows
to print a line as each benchmark starts and ends. pytest's full output goes to
var/bench/bench.log. At the end, in every case (failures and Ctrl-C included), the report and
its charts (docs/bench/) are written by tools/bench_report.py, and the exit status is non-zero
when a benchmark failed or a target was not met, as the last line says.

The expected count comes from the plugin's collection event, not from a separate
``--collect-only`` run: the same selection, without a second pytest start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from bench_report import (
    Outcome,
    Recorded,
    RunInfo,
    counted,
    duration,
    figure_line,
    read_figures,
    short_id,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
BENCHMARKS = "tests/performance"
RESULTS_ENV = "PA_BENCH_RESULTS"  # tests/performance/conftest.py's record() appends there
EVENTS_ENV = "PA_BENCH_EVENTS"  # this plugin's events, for the runner's progress
POLL_S = 0.5  # how often the runner looks for new events: progress lines need no more
LOG_TAIL = 40  # lines of the log quoted in the report when pytest stopped short
# pytest options whose value is the next argument (so that value is not taken for a path).
VALUED = {"-k", "-m", "-p", "-o", "-c", "-W", "--deselect", "--ignore", "--rootdir"}


# --- the pytest plugin (``-p bench`` in the pytest subprocess) --------------------------------


def emit(event: dict[str, Any]) -> None:
    """Append an event for the runner (nothing when pytest runs without it)."""
    path = os.environ.get(EVENTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\n")


def figures_so_far() -> int:
    """How many figures the results file holds: each test's figures lie between its counts at
    start and at finish (benchmarks run one after the other)."""
    path = os.environ.get(RESULTS_ENV)
    if not path or not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as results:
        return sum(1 for _ in results)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Tell the runner how many benchmarks are selected."""
    emit({"event": "collected", "count": len(session.items)})


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Tell the runner about a module that failed to import."""
    if report.failed:
        emit({"event": "collect_error", "nodeid": report.nodeid, "message": report.longreprtext})


def pytest_runtest_logstart(nodeid: str) -> None:
    """A benchmark starts."""
    emit({"event": "start", "nodeid": nodeid, "time": time.time(), "figures": figures_so_far()})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A phase (set-up, call, tear-down) ended: its result, and the failure's one-line cause."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])
    else:
        message = crash.message if crash is not None else report.longreprtext[-500:]
    emit(
        {
            "event": "phase",
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "message": message,
        }
    )


def pytest_runtest_logfinish(nodeid: str) -> None:
    """A benchmark ended."""
    emit({"event": "finish", "nodeid": nodeid, "time": time.time(), "figures": figures_so_far()})


# --- the runner -----------------------------------------------------------------------------------


class Progress:
    """Folds the plugin's events into outcomes, and says what to print for each."""

    def __init__(self) -> None:
        self.expected: int | None = None
        self.outcomes: dict[str, Outcome] = {}
        self.collect_errors: list[tuple[str, str]] = []

    def feed(self, event: Mapping[str, Any], figures: Sequence[Recorded]) -> list[str]:
        """Take one event; return the progress lines it makes (``figures``: all recorded so far,
        to show those of a benchmark that just ended)."""
        kind, nodeid = event.get("event"), str(event.get("nodeid", ""))
        lines: list[str] = []
        if kind == "collected":
            self.expected = int(event["count"])
            lines.append(f"{counted(self.expected, 'benchmark')} selected")
        elif kind == "collect_error":
            self.collect_errors.append((nodeid, str(event.get("message", ""))))
            lines.append(f"collection error in {nodeid}")
        elif kind == "start":
            count = int(event.get("figures", 0))
            self.outcomes[nodeid] = Outcome(nodeid, started=float(event["time"]), first=count)
            self.outcomes[nodeid].end = count
            lines.append(f"{self.position(nodeid)} {short_id(nodeid)} started")
        elif nodeid in self.outcomes:
            outcome = self.outcomes[nodeid]
            if kind == "phase":
                self.phase(outcome, str(event["when"]), str(event["outcome"]), event.get("message"))
            elif kind == "finish":
                lines += self.finish(outcome, event, figures)
        return lines

    def finish(
        self, outcome: Outcome, event: Mapping[str, Any], figures: Sequence[Recorded]
    ) -> list[str]:
        """A benchmark ended: its line, then one per figure it recorded."""
        outcome.end = int(event.get("figures", outcome.first))
        outcome.seconds = float(event["time"]) - outcome.started
        if outcome.outcome == "running":
            outcome.outcome = "passed"
        head = (
            f"{self.position(outcome.nodeid)} {short_id(outcome.nodeid)} {outcome.outcome} in "
            f"{duration(outcome.seconds)}"
        )
        return [head, *(f"      {figure_line(f)}" for f in figures[outcome.first : outcome.end])]

    @staticmethod
    def phase(outcome: Outcome, when: str, result: str, message: object) -> None:
        """Fold one phase's result (set-up, call, tear-down) into the test's outcome."""
        if result == "failed":
            if outcome.outcome not in {"failed", "error"}:
                outcome.outcome = "failed" if when == "call" else "error"
                outcome.message = str(message or "")
        elif result == "skipped" and outcome.outcome == "running":
            outcome.outcome, outcome.message = "skipped", str(message or "")

    def position(self, nodeid: str) -> str:
        """``[3/14]``: the benchmark's place among those started, of those selected."""
        index = list(self.outcomes).index(nodeid) + 1
        return f"[{index}/{self.expected if self.expected is not None else '?'}]"


def argv_for_pytest(extra: list[str]) -> list[str]:
    """The pytest arguments: ``extra`` as given, after tests/performance unless ``extra``
    names benchmark files or tests itself."""
    paths = []
    for i, arg in enumerate(extra):
        after_option = i > 0 and extra[i - 1] in VALUED
        if not arg.startswith("-") and not after_option and (ROOT / arg.split("::")[0]).exists():
            paths.append(arg)
    return ["-s", "-p", "no:cacheprovider", "-p", "bench", *([] if paths else [BENCHMARKS]), *extra]


def version(package: str) -> str:
    """An installed distribution's version, or "not installed"."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> list[tuple[str, str]]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server = "not found"
    executable = shutil.which("redis-server")
    if executable:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = subprocess.run(  # noqa: S603 (the PATH's redis-server, no shell)
                [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
            words = done.stdout.split()
            server = next((w[2:] for w in words if w.startswith("v=")), "unknown")
    return [
        ("CPU", f"{os.cpu_count()} cores, {model}"),
        ("Python", platform.python_version()),
        ("Celery, kombu, redis-py", f"{version('celery')}, {version('kombu')}, {version('redis')}"),
        ("Redis server", server),
    ]


def follow(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete lines appended to ``path`` since ``offset``, and the new offset."""
    if not path.exists():
        return [], offset
    with path.open("rb") as source:
        source.seek(offset)
        chunk = source.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next look
    events = [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
    return events, offset + len(complete)


def run(extra: list[str], out_dir: Path, report: Path, chart_dir: Path) -> int:
    """Run the benchmarks, print progress, write the report; return the exit status."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results, events, log = (
        out_dir / f"results-{stamp}.jsonl",
        out_dir / f"events-{stamp}.jsonl",
        out_dir / "bench.log",
    )
    for fresh in (results, events):
        fresh.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", *argv_for_pytest(extra)]
    python_path = os.pathsep.join(p for p in (str(TOOLS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, RESULTS_ENV: str(results), EVENTS_ENV: str(events)}
    env["PYTHONPATH"] = python_path
    started, clock = datetime.now().astimezone(), time.monotonic()
    progress, offset = Progress(), 0
    print(f"benchmarks: pytest log in {rel(log)}, figures in {rel(results)}", flush=True)
    with log.open("w", encoding="utf-8") as log_file:
        child = subprocess.Popen(  # noqa: S603 (argv built here, no shell)
            command, cwd=ROOT, env=env, stdout=log_file, stderr=log_file
        )
        exit_code: int | None = None
        while exit_code is None:
            try:
                exit_code = child.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:  # the terminal sent SIGINT to pytest too: let it end
                print("interrupted: waiting for pytest to stop, then writing the report")
                exit_code = child.wait()
            new, offset = follow(events, offset)
            figures = read_figures(results) if new else []
            for event in new:
                for line in progress.feed(event, figures):
                    print(line, flush=True)
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:])
    info = RunInfo(
        started=started,
        seconds=time.monotonic() - clock,
        command=shlex.join(["python", "tools/bench.py", *extra]),
        pytest_command=shlex.join(["pytest", *argv_for_pytest(extra)]),
        machine=machine(),
        pytest_exit=exit_code,
        log=rel(log),
        log_tail=tail,
        outcomes=list(progress.outcomes.values()),
        collect_errors=progress.collect_errors,
    )
    verdict = write_report(info, read_figures(results), report, chart_dir)
    print(verdict.line, flush=True)
    return verdict.exit_code


def rel(path: Path) -> str:
    """``path`` relative to the repository when inside it, for short messages."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Parse this script's own options; everything else goes to pytest."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument(
        "--bench-dir",
        type=Path,
        default=ROOT / "var" / "bench",
        help="the run's results, events and pytest log (default var/bench)",
    )
    parser.add_argument(
        "--bench-report",
        type=Path,
        default=ROOT / "bench-report.md",
        help="the report to write (default bench-report.md)",
    )
    parser.add_argument(
        "--chart-dir",
        type=Path,
        default=ROOT / "docs" / "bench",
        help="its SVG charts, replacing those of the last run (default docs/bench)",
    )
    parser.epilog = "Any other argument goes to pytest: -k EXPRESSION, a benchmark's file, ..."
    options, extra = parser.parse_known_args(argv)
    return run(extra, options.bench_dir, options.bench_report, options.chart_dir)


if __name__ == "__main__":
    sys.exit(main())
