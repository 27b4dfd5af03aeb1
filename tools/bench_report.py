"""``bench-report.md`` from one ``make bench`` run: pure, from what the run left behind.

Inputs: the figures the benchmarks recorded (``record(Figure(...))`` in
tests/performance/conftest.py appends one JSON object a line to the results file), the end of
each benchmark (:class:`Outcome`: folded by tools/bench.py from its pytest plugin's events, with
the range of figures it recorded) and the run's facts (date, machine, time, command), both in
:class:`RunInfo`. Output: the markdown report, its SVG charts (tools/svg_chart.py) and the
verdict the runner exits with. No subprocess, clock or environment here: tools/bench.py gathers
those, so this module is tested on recorded files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from svg_chart import Bar, bar_chart, line_chart

# A target that reads as a ratio (">= 0.97x", "<= 1.0x"): drawn as the bar's target mark.
RATIO_TARGET = re.compile(r"^\s*(?:>=|<=|>|<|=)\s*(-?\d+(?:\.\d+)?)\s*x\s*$")
RATIOS_CHART = "ratios.svg"


@dataclass(frozen=True)
class Recorded:
    """One measured figure of a benchmark, beside its anchor measured in the same run (the
    benchmarks' ``Figure``, tests/performance/conftest.py).

    ``ratio`` is ours over the anchor in the direction the target reads (throughput: ours /
    anchor, higher is better; time or memory: ours / anchor, lower is better); ``target`` says
    which (">= 0.97x", "<= 1.0x", "<= 5 MB"), and ``met`` whether this run meets it (None: a
    figure for the record, with no target). ``series`` holds points for a plot: a name per
    line and its (x, y) pairs, e.g. {"ours": [[1, 640], [2, 1010]], "plain Celery": [...]}.
    """

    benchmark: str
    measure: str
    ours: float
    unit: str
    anchor: float | None = None
    anchor_name: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    detail: str = ""
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    x_label: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Recorded:
        """The figure of one results line; keys this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a one-object-a-line file; a missing file is empty, and a line that
    does not parse (cut short by a killed run) is skipped."""
    if not path.exists():
        return []
    objects = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            objects.append(value)
    return objects


def read_figures(path: Path) -> list[Recorded]:
    """The figures of a results file, in the order they were recorded."""
    return [Recorded.from_json(data) for data in read_lines(path)]


@dataclass
class Outcome:
    """One benchmark's end: passed, failed (its test), error (its set-up or tear-down), skipped,
    or running (never finished: the run was interrupted); the figures ``first:end`` are its."""

    nodeid: str
    outcome: str = "running"
    seconds: float = 0.0
    message: str = ""
    started: float = 0.0
    first: int = 0
    end: int = 0

    @property
    def failed(self) -> bool:
        """Whether it counts against the run."""
        return self.outcome in {"failed", "error", "running"}


def short_id(nodeid: str) -> str:
    """The test id without the benchmarks' folder."""
    return nodeid.removeprefix("tests/performance/")


def duration(seconds: float) -> str:
    """``41 s``, ``12 min 5 s``, ``1 h 2 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def counted(count: int, noun: str) -> str:
    """``1 benchmark``, ``2 benchmarks``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def number(value: float) -> str:
    """Three significant figures below 100 (0.457, 1.5, 12.3), whole and thousands separated
    above (1,235)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio_text(ratio: float | None) -> str:
    """``0.934x``, or ``-``."""
    return "-" if ratio is None else f"{ratio:.3f}x"


def met_text(met: bool | None) -> str:
    """``yes``, ``NO`` (loud: it fails the run) or ``-`` (a figure for the record)."""
    return "-" if met is None else "yes" if met else "NO"


def anchor_text(figure: Recorded) -> str:
    """The anchor's name and value, or ``-``."""
    if figure.anchor is None:
        return "-"
    return f"{figure.anchor_name} {number(figure.anchor)} {figure.unit}".strip()


def figure_line(figure: Recorded) -> str:
    """One figure on one line, for the progress output."""
    anchor = f" vs {anchor_text(figure)}" if figure.anchor is not None else ""
    ratio = f" = {ratio_text(figure.ratio)}" if figure.ratio is not None else ""
    target = f", target {figure.target}: {met_text(figure.met)}" if figure.target else ""
    return f"{figure.measure}: {number(figure.ours)} {figure.unit}{anchor}{ratio}{target}"


def cell(text: str) -> str:
    """Text safe in a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class RunInfo:
    """The run's facts, gathered by the runner: when, where, how long, how it was started."""

    started: datetime
    seconds: float
    command: str
    pytest_command: str
    machine: Sequence[tuple[str, str]]
    pytest_exit: int
    log: str
    log_tail: str = ""
    outcomes: Sequence[Outcome] = ()
    collect_errors: Sequence[tuple[str, str]] = ()

    @property
    def failed(self) -> list[Outcome]:
        """The benchmarks that count against the run."""
        return [o for o in self.outcomes if o.failed]


@dataclass(frozen=True)
class Verdict:
    """What the runner exits with, and the last line it prints."""

    exit_code: int
    line: str


def verdict(run: RunInfo, figures: Sequence[Recorded], report: str) -> Verdict:
    """Zero only when pytest passed, no benchmark failed and every target was met."""
    failed = run.failed
    missed = [f for f in figures if f.met is False]
    met = sum(1 for f in figures if f.met)
    if run.pytest_exit == 5:
        return Verdict(5, f"bench: FAILED: no benchmark selected; report in {report}")
    if not failed and not missed and run.pytest_exit == 0:
        return Verdict(
            0,
            f"bench: {counted(len(run.outcomes), 'benchmark')} passed, "
            f"{counted(met, 'target')} met; report in {report}",
        )
    problems = []
    if failed:
        names = ", ".join(short_id(o.nodeid) for o in failed)
        problems.append(f"{len(failed)} of {len(run.outcomes)} benchmarks failed ({names})")
    if missed:
        names = ", ".join(f"{f.benchmark}: {f.measure}" for f in missed)
        problems.append(f"{counted(len(missed), 'target')} NOT met ({names})")
    if not problems:
        problems.append(f"pytest exited with code {run.pytest_exit}")
    code = run.pytest_exit if run.pytest_exit not in {0, 1} else 1
    return Verdict(code, f"bench: FAILED: {'; '.join(problems)}; report in {report}")


def slug(text: str) -> str:
    """A file name's stem from free text."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "figure"


def charts(figures: Sequence[Recorded]) -> dict[str, tuple[str, str]]:
    """The charts of a run, by file name: (caption, SVG). The ratios' bar chart when a figure
    has a ratio; a line chart per figure with series."""
    made: dict[str, tuple[str, str]] = {}
    bars = [
        Bar(f"{f.benchmark}: {f.measure}", f.ratio, ratio_target(f.target), f.met)
        for f in figures
        if f.ratio is not None
    ]
    if bars:
        caption = "Each figure over its anchor, measured in the same run, with its target"
        made[RATIOS_CHART] = (caption, bar_chart(caption, bars, x_label="ours / anchor"))
    for f in figures:
        if not f.series:
            continue
        name, n = f"{slug(f.benchmark + '-' + f.measure)}.svg", 2
        while name in made:
            name, n = f"{slug(f.benchmark + '-' + f.measure)}-{n}.svg", n + 1
        title = f"{f.benchmark}: {f.measure}"
        svg = line_chart(title, f.series, x_label=f.x_label, y_label=f.unit)
        made[name] = (title, svg)
    return made


def ratio_target(target: str) -> float | None:
    """The number of a ratio target (">= 0.97x" -> 0.97), else None."""
    match = RATIO_TARGET.match(target)
    return float(match.group(1)) if match else None


def render(
    run: RunInfo,
    figures: Sequence[Recorded],
    chart_links: Mapping[str, str],
) -> str:
    """The markdown report; ``chart_links``: each chart's path as the report links it, to its
    caption."""
    lines = ["# Benchmark report", ""]
    lines += [
        f"- Date: {run.started.strftime('%Y-%m-%d %H:%M %Z').strip()}",
        *(f"- {name}: {value}" for name, value in run.machine),
        f"- Total time: {duration(run.seconds)}",
        f"- Command: `{run.command}` (pytest: `{run.pytest_command}`)",
        f"- Full log: `{run.log}`",
        "",
        "## Summary",
        "",
    ]
    failing = {i for o in run.failed for i in range(o.first, o.end)}
    if figures:
        lines.append("| benchmark | measure | ours | anchor | ratio | target | met |")
        lines.append("|---|---|---:|---|---:|---|---|")
        for i, f in enumerate(figures):
            name = f"{f.benchmark} (test failed)" if i in failing else f.benchmark
            row = (
                name,
                f.measure,
                f"{number(f.ours)} {f.unit}",
                anchor_text(f),
                ratio_text(f.ratio),
                f.target or "-",
                met_text(f.met),
            )
            lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    else:
        lines.append("No figure was recorded.")
    lines += ["", *failures(run)]
    if chart_links:
        lines += ["## Charts", ""]
        lines += [f"![{caption}]({link})\n" for link, caption in chart_links.items()]
    lines += [*details(figures), *outcome_table(run.outcomes)]
    return "\n".join(lines).rstrip() + "\n"


def failures(run: RunInfo) -> list[str]:
    """The failures section: each failed benchmark with its message, collection errors, and
    the log's tail when pytest itself stopped short."""
    failed = run.failed
    if not failed and not run.collect_errors and run.pytest_exit in {0, 1}:
        return []
    lines = ["## Failures", ""]
    for o in failed:
        count = o.end - o.first
        recorded = f"{counted(count, 'figure')} recorded" if count else "nothing recorded"
        message = o.message.strip().splitlines()[0] if o.message.strip() else "no message"
        what = (
            "never finished" if o.outcome == "running" else f"{o.outcome} in {duration(o.seconds)}"
        )
        lines.append(f"- `{o.nodeid}` {what} ({recorded}): `{cell(message)[:300]}`")
    lines += [
        f"- collection error in `{nodeid}`: {cell(msg)[:300]}" for nodeid, msg in run.collect_errors
    ]
    if run.pytest_exit not in {0, 1}:
        lines.append(f"- pytest exited with code {run.pytest_exit}; the end of its log:")
        lines += ["", "```", run.log_tail.rstrip(), "```"]
    lines.append(f"\nThe full output is in `{run.log}`.\n")
    return lines


def details(figures: Sequence[Recorded]) -> list[str]:
    """Each benchmark's figures' details, in the order recorded."""
    by_benchmark: dict[str, list[Recorded]] = {}
    for f in figures:
        by_benchmark.setdefault(f.benchmark, []).append(f)
    lines = ["## Details", ""] if any(f.detail for f in figures) else []
    for benchmark, group in by_benchmark.items():
        described = [f for f in group if f.detail]
        if not described:
            continue
        lines += [f"### {benchmark}", ""]
        for f in described:
            if "\n" in f.detail:
                lines += [f"{f.measure}:", "", "```", f.detail.rstrip(), "```", ""]
            else:
                lines += [f"- {f.measure}: {f.detail}"]
        lines.append("")
    return lines


def outcome_table(outcomes: Sequence[Outcome]) -> list[str]:
    """Every benchmark run, with its outcome and time."""
    if not outcomes:
        return []
    lines = ["## Benchmarks run", "", "| test | outcome | time |", "|---|---|---:|"]
    for o in outcomes:
        lines.append(f"| `{o.nodeid}` | {o.outcome} | {duration(o.seconds)} |")
    return [*lines, ""]


def write_report(
    run: RunInfo,
    figures: Sequence[Recorded],
    report: Path,
    chart_dir: Path,
) -> Verdict:
    """Write the report and its charts (the chart folder holds the latest run's charts only:
    the SVGs of an earlier run are removed first); return the verdict."""
    chart_dir.mkdir(parents=True, exist_ok=True)
    for old in chart_dir.glob("*.svg"):
        old.unlink()
    links = {}
    for name, (caption, svg) in charts(figures).items():
        (chart_dir / name).write_text(svg, encoding="utf-8")
        links[Path(os.path.relpath(chart_dir / name, report.parent)).as_posix()] = caption
    report.write_text(render(run, figures, links), encoding="utf-8")
    return verdict(run, figures, report.name)
