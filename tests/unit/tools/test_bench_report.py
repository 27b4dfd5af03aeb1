"""tools/bench_report.py: bench-report.md and its charts from a recorded run; and tools/bench.py,
which feeds it: its progress lines from the plugin's events, and a whole run of a tiny benchmark
of the test's own (a real pytest subprocess)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import bench
import pytest
from bench import Progress
from bench_report import (
    RATIOS_CHART,
    Recorded,
    RunInfo,
    read_figures,
    verdict,
    write_report,
)

from tests.performance.conftest import RESULTS_ENV, Figure, record

FETCH = Figure(
    benchmark="reliable fetch",
    measure="drain rate",
    ours=1213.4,
    unit="tasks/s",
    anchor=1277.0,
    anchor_name="kombu BRPOP",
    ratio=0.9502,
    target=">= 0.95x",
    met=True,
    detail="rounds [1200, 1230]",
    series={"reliable fetch": [[1, 1200], [2, 1230]], "kombu BRPOP": [[1, 1270], [2, 1280]]},
    x_label="round",
)
BEAT = Figure(
    benchmark="beat",
    measure="mean time per tick",
    ours=1.234,
    unit="ms",
    anchor=1.1,
    anchor_name="celery-redbeat",
    ratio=1.1218,
    target="<= 1.0x",
    met=False,
    detail="        set-up s\nours     1.2",
)
RECORD_ONLY = Figure("beat", "tick time per sent run", 0.5, "ms", anchor=0.8, ratio=0.625)
FETCH_ID = "tests/performance/test_bench_reliable_fetch.py::test_fetch"
BEAT_ID = "tests/performance/test_bench_beat.py::test_beat"


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A results file written by the benchmarks' own ``record()``: fetch's figure, then beat's
    two."""
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    for figure in (FETCH, BEAT, RECORD_ONLY):
        record(figure)
    return path


def events(*, beat_failed: bool = True) -> list[dict[str, object]]:
    """The plugin's events of a run of two benchmarks: fetch passes with one figure; beat fails
    its assertion (or passes) after recording two."""
    beat_call = {"outcome": "failed", "message": "AssertionError: assert 1.12 <= 1.0"}
    if not beat_failed:
        beat_call = {"outcome": "passed", "message": ""}
    return [
        {"event": "collected", "count": 2},
        {"event": "start", "nodeid": FETCH_ID, "time": 100.0, "figures": 0},
        {"event": "phase", "nodeid": FETCH_ID, "when": "setup", "outcome": "passed"},
        {"event": "phase", "nodeid": FETCH_ID, "when": "call", "outcome": "passed"},
        {"event": "finish", "nodeid": FETCH_ID, "time": 141.2, "figures": 1},
        {"event": "start", "nodeid": BEAT_ID, "time": 141.3, "figures": 1},
        {"event": "phase", "nodeid": BEAT_ID, "when": "setup", "outcome": "passed"},
        {"event": "phase", "nodeid": BEAT_ID, "when": "call", **beat_call},
        {"event": "finish", "nodeid": BEAT_ID, "time": 900.0, "figures": 3},
    ]


def fed(figures: list[Recorded], stream: list[dict[str, object]]) -> tuple[Progress, list[str]]:
    progress, printed = Progress(), []
    for event in stream:
        printed += progress.feed(event, figures)
    return progress, printed


def run_info(exit_code: int = 1, progress: Progress | None = None) -> RunInfo:
    """The facts of a run that ended with ``exit_code`` and the benchmarks ``progress`` saw."""
    progress = progress or Progress()
    return RunInfo(
        started=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        seconds=1865,
        command="python tools/bench.py -k 'beat or fetch'",
        pytest_command="pytest -s -p no:cacheprovider -p bench tests/performance -k beat",
        machine=[("CPU", "2 cores, AMD EPYC"), ("Redis server", "7.0.15")],
        pytest_exit=exit_code,
        log="var/bench/bench.log",
        log_tail="INTERNALERROR> boom",
        outcomes=list(progress.outcomes.values()),
        collect_errors=progress.collect_errors,
    )


def written(tmp_path: Path, results: Path, exit_code: int = 1) -> tuple[str, Path]:
    figures = read_figures(results)
    progress, _ = fed(figures, events())
    report, charts = tmp_path / "bench-report.md", tmp_path / "docs" / "bench"
    write_report(run_info(exit_code, progress), figures, report, charts)
    return report.read_text(), charts


def test_a_recorded_figure_reads_back_whole(results: Path) -> None:
    assert read_figures(results)[0] == Recorded(**json.loads(results.read_text().splitlines()[0]))
    assert read_figures(results)[0].series == FETCH.series


def test_a_results_line_cut_short_by_a_killed_run_is_skipped(results: Path) -> None:
    with results.open("a") as out:
        out.write('{"benchmark": "cut", "meas')
    assert [f.benchmark for f in read_figures(results)] == ["reliable fetch", "beat", "beat"]


def test_the_summary_has_a_row_per_figure_with_anchor_ratio_target_and_verdict(
    tmp_path: Path, results: Path
) -> None:
    text, _ = written(tmp_path, results)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "tasks/s" in line]
    assert rows == [
        "| reliable fetch | drain rate | 1,213 tasks/s | kombu BRPOP 1,277 tasks/s | 0.950x "
        "| >= 0.95x | yes |"
    ]
    assert (
        "| beat (test failed) | mean time per tick | 1.23 ms | celery-redbeat 1.1 ms | 1.122x "
        "| <= 1.0x | NO |" in text
    )
    record_only = (
        "| beat (test failed) | tick time per sent run | 0.5 ms | 0.8 ms | 0.625x | - | - |"
    )
    assert record_only in text


def test_a_failed_benchmark_is_listed_with_its_message_and_what_it_recorded(
    tmp_path: Path, results: Path
) -> None:
    text, _ = written(tmp_path, results)
    failures = text.split("## Failures")[1].split("##")[0]
    assert (
        f"- `{BEAT_ID}` failed in 12 min 39 s (2 figures recorded): "
        "`AssertionError: assert 1.12 <= 1.0`" in failures
    )
    assert FETCH_ID not in failures
    assert (
        "| `tests/performance/test_bench_reliable_fetch.py::test_fetch` | passed | 41 s |" in text
    )


def test_the_header_says_when_where_how_long_and_how(tmp_path: Path, results: Path) -> None:
    text, _ = written(tmp_path, results)
    assert "- Date: 2026-01-02 03:04 UTC" in text
    assert "- CPU: 2 cores, AMD EPYC" in text and "- Redis server: 7.0.15" in text
    assert "- Total time: 31 min 5 s" in text
    assert "`python tools/bench.py -k 'beat or fetch'`" in text


def test_details_follow_the_table_per_benchmark_a_table_of_lines_kept_as_is(
    tmp_path: Path, results: Path
) -> None:
    details = written(tmp_path, results)[0].split("## Details")[1]
    assert "### reliable fetch\n\n- drain rate: rounds [1200, 1230]" in details
    assert "mean time per tick:\n\n```\n        set-up s\nours     1.2\n```" in details


def svg_root(path: Path) -> ET.Element:
    """A chart's root element (fails on malformed XML)."""
    return ET.fromstring(path.read_text())  # noqa: S314 (a chart this test just wrote)


def test_the_charts_are_svg_files_linked_from_the_report(tmp_path: Path, results: Path) -> None:
    text, charts = written(tmp_path, results)
    files = sorted(p.name for p in charts.glob("*.svg"))
    assert files == [RATIOS_CHART, "reliable-fetch-drain-rate.svg"]
    for name in files:
        assert f"](docs/bench/{name})" in text
        assert svg_root(charts / name).tag == "{http://www.w3.org/2000/svg}svg"
    ratios = svg_root(charts / RATIOS_CHART)
    bars = [g for g in ratios.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "bar"]
    assert len(bars) == 3  # every figure with a ratio


def test_charts_of_an_earlier_run_are_removed(tmp_path: Path, results: Path) -> None:
    stale = tmp_path / "docs" / "bench" / "scaling-old.svg"
    stale.parent.mkdir(parents=True)
    stale.write_text("<svg/>")
    written(tmp_path, results)
    assert not stale.exists()


def test_the_run_fails_naming_each_failed_benchmark_and_missed_target(results: Path) -> None:
    figures = read_figures(results)
    result = verdict(run_info(1, fed(figures, events())[0]), figures, "bench-report.md")
    assert result.exit_code == 1
    assert result.line == (
        "bench: FAILED: 1 of 2 benchmarks failed (test_bench_beat.py::test_beat); 1 target NOT "
        "met (beat: mean time per tick); report in bench-report.md"
    )


def test_a_missed_target_fails_the_run_even_when_every_test_passed(results: Path) -> None:
    figures = read_figures(results)
    progress, _ = fed(figures, events(beat_failed=False))
    assert verdict(run_info(0, progress), figures, "r.md").exit_code == 1


def test_a_run_that_passed_and_met_every_target_exits_zero(results: Path) -> None:
    figures = read_figures(results)[:1]
    progress, _ = fed(figures, events(beat_failed=False))
    result = verdict(run_info(0, progress), figures, "r.md")
    assert (result.exit_code, result.line) == (
        0,
        "bench: 2 benchmarks passed, 1 target met; report in r.md",
    )


def test_a_run_that_stopped_short_quotes_the_log_and_keeps_pytests_code(
    tmp_path: Path, results: Path
) -> None:
    text, _ = written(tmp_path, results, exit_code=3)
    assert "pytest exited with code 3" in text and "INTERNALERROR> boom" in text
    progress = Progress()
    progress.feed({"event": "start", "nodeid": BEAT_ID, "time": 1.0, "figures": 0}, [])
    assert progress.outcomes[BEAT_ID].failed  # interrupted: never finished
    assert verdict(run_info(2, progress), [], "r.md").exit_code == 2
    assert "no benchmark selected" in verdict(run_info(5), [], "r.md").line


def test_progress_prints_a_line_as_each_benchmark_starts_and_ends_with_its_figures(
    results: Path,
) -> None:
    _, printed = fed(read_figures(results), events())
    assert printed[:3] == [
        "2 benchmarks selected",
        "[1/2] test_bench_reliable_fetch.py::test_fetch started",
        "[1/2] test_bench_reliable_fetch.py::test_fetch passed in 41 s",
    ]
    assert printed[3].strip() == (
        "drain rate: 1,213 tasks/s vs kombu BRPOP 1,277 tasks/s = 0.950x, target >= 0.95x: yes"
    )
    assert printed[5] == "[2/2] test_bench_beat.py::test_beat failed in 12 min 39 s"
    assert len(printed) == 8


FAKE_BENCHMARK = """
from tests.performance.conftest import Figure, record

def test_slow_side():
    record(Figure("fake", "rate", 90.0, "tasks/s", anchor=100.0, anchor_name="plain",
                  ratio=0.9, target=">= 0.97x", met=False))
    assert 0.9 >= 0.97

def test_fast_side():
    record(Figure("fake", "time", 4.0, "ms", target="< 5 ms", met=True))
"""


def test_the_runner_runs_pytest_writes_the_report_and_fails_on_a_missed_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    benchmark = tmp_path / "test_fake_bench.py"
    benchmark.write_text(FAKE_BENCHMARK)
    report = tmp_path / "bench-report.md"
    argv = [str(benchmark), "--bench-dir", str(tmp_path / "var"), "--bench-report", str(report)]
    code = bench.main([*argv, "--chart-dir", str(tmp_path / "charts")])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert "2 benchmarks selected" in out
    # The id is relative to pytest's rootdir, which depends on where the checkout lies.
    assert any(
        line.startswith("[2/2] ") and "test_fake_bench.py::test_fast_side passed in" in line
        for line in out
    )
    assert out[-1].startswith("bench: FAILED: 1 of 2 benchmarks failed")
    text = report.read_text()
    assert "| fake (test failed) | rate | 90 tasks/s | plain 100 tasks/s | 0.900x |" in text
    assert "| fake | time | 4 ms | - | - | < 5 ms | yes |" in text
    assert "assert 0.9 >= 0.97" in text
    assert "test_slow_side" in (tmp_path / "var" / "bench.log").read_text()
    assert (tmp_path / "charts" / RATIOS_CHART).exists()


def test_pytest_gets_the_benchmarks_folder_unless_given_files() -> None:
    assert bench.argv_for_pytest(["-k", "beat"])[-3:] == ["tests/performance", "-k", "beat"]
    given = bench.argv_for_pytest(["tests/performance/test_bench_beat.py"])
    assert "tests/performance" not in given
    # -k's value is never a path, even when a file of that name exists
    assert bench.argv_for_pytest(["-k", "Makefile"])[-3] == "tests/performance"
