"""tools/promql_check.py: finds the metric names of tricky PromQL, maps promtool's parse errors
back to their panel or rule, and passes on the repository's dashboards and rules.

promtool is a real dependency (Debian's ``prometheus`` package, installed by ``make test``):
without it these tests fail, they are not skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from promql_check import (
    Expression,
    dashboard_expressions,
    load_exported,
    metric_names,
    name_problems,
    parse_problems,
    rule_expressions,
    to_promql,
)

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "tools" / "promql_check.py"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: apt-get install -y prometheus", pytrace=False)
    return path


def run_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("celery_queue_length", {"celery_queue_length"}),
        ('celery_queue_length{queue_name="ai_tasks"}', {"celery_queue_length"}),
        # Functions, aggregations with by/without before or after, label lists.
        (
            "sum by (queue_name, le) (rate(celery_task_runtime_bucket[5m]))",
            {"celery_task_runtime_bucket"},
        ),
        ("sum(rate(a_total[5m])) without (instance, job)", {"a_total"}),
        ("max without (instance) (b)", {"b"}),
        # Vector matching: on/ignoring/group_left label lists are labels, not metrics.
        ("a / on (hostname) group_left (job, queue) b", {"a", "b"}),
        ("a * ignoring(exception) group_right b", {"a", "b"}),
        ("count(a) > 0 and on () absent(b)", {"a", "b"}),
        # Keywords, numbers, durations, offsets, @, subqueries, bool.
        ("a offset 1h30m > bool 5", {"a"}),
        ("rate(a[5m] @ start()) unless b offset -5m", {"a", "b"}),
        ("max_over_time(rate(a[1m])[30m:1m])", {"a"}),
        ("a > Inf or b < NaN or c > 1e3 or d > 0x1F", {"a", "b", "c", "d"}),
        ("a atan2 b", {"a", "b"}),
        (
            "time() - max(celery_beat_last_tick_timestamp_seconds)",
            {"celery_beat_last_tick_timestamp_seconds"},
        ),
        ("vector(0)", set()),
        # Strings and matchers hiding identifiers, braces and quotes.
        ('a{x="b", y=~"c|d}", z!~\'e"f\'}', {"a"}),
        ('label_replace(up, "dst", "$1", "src", "(.*)")', {"up"}),
        ('count_values("value", build_info)', {"build_info"}),
        ('{__name__="named_by_matcher", job="x"}', {"named_by_matcher"}),
        ('{__name__=~"regex_.*"}', set()),
        ("topk(5, a) # a comment naming not_a_metric", {"a"}),
        ("sum\n  by (queue_name)\n  (\n    a\n  )", {"a"}),
        ('ALERTS{alertstate="firing"}', {"ALERTS"}),
    ],
)
def test_metric_names_are_the_selected_series_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_variables_become_promql_that_parses() -> None:
    text = 'rate(a{q=~"$queue", t="${task}", h="[[host]]", f="${v:regex}"}[$__rate_interval])'
    assert to_promql(text) == 'rate(a{q=~"x", t="x", h="x", f="x"}[5m])'
    assert to_promql("increase(b[${__range}]) / $__range_s") == "increase(b[5m]) / 300"


def test_the_exported_list_expands_histograms_and_knows_prometheus_own(tmp_path: Path) -> None:
    listing = tmp_path / "metrics.txt"
    listing.write_text("# comment\n\nh histogram\nc_total counter  # why\ng gauge\n")
    assert load_exported(listing) == {
        "h_bucket", "h_sum", "h_count", "c_total", "g", "up", "ALERTS", "ALERTS_FOR_STATE",
    }  # fmt: skip


def test_a_malformed_line_of_the_list_is_named(tmp_path: Path) -> None:
    listing = tmp_path / "metrics.txt"
    listing.write_text("a gauge\nb\n")
    with pytest.raises(ValueError, match=r"metrics.txt:2: expected"):
        load_exported(listing)


def test_parse_errors_are_mapped_to_their_source() -> None:
    expressions = [
        Expression("panel ok", "sum(rate(a[5m]))"),
        Expression("panel unclosed", "sum(rate(a[5m])"),
        Expression("panel grafana", 'rate(a{q=~"$queue"}[$__rate_interval])'),
        Expression("rule dangling", "a +"),
    ]
    problems = parse_problems(expressions, promtool())
    assert len(problems) == 2, problems
    assert problems[0].startswith("panel unclosed: could not parse expression")
    assert "unclosed left parenthesis" in problems[0]
    assert problems[1].startswith("rule dangling: could not parse expression")


def test_unknown_names_are_reported_with_their_source() -> None:
    exported = frozenset({"known_total", "up"})
    expressions = [
        Expression("fine", 'sum(rate(known_total{x="unknown_in_a_string"}[5m])) / up'),
        Expression("typo", "rate(knwon_total[5m]) + rate(other[5m])"),
    ]
    assert name_problems(expressions, exported) == [
        "typo: names knwon_total, other, not in the exported metrics list"
    ]


def board(targets: list[dict[str, Any]], query: str) -> dict[str, Any]:
    return {
        "panels": [
            {"id": 1, "type": "row", "title": "r", "panels": [
                {"id": 2, "type": "timeseries", "title": "Inner", "targets": targets},
            ]},
        ],
        "templating": {"list": [
            {"name": "queue", "type": "query", "query": {"query": query}},
            {"name": "task", "type": "query", "query": "label_values(name)"},
            {"name": "interval", "type": "interval", "query": "1m,5m"},
        ]},
    }  # fmt: skip


def test_dashboard_expressions_include_nested_panels_and_variable_selectors(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.json"
    targets = [{"refId": "A", "expr": "a"}, {"refId": "B", "expr": ""}]
    path.write_text(json.dumps(board(targets, 'label_values(m{job="x"}, queue_name)')))
    found = dashboard_expressions(path)
    assert [e.text for e in found] == ["a", 'm{job="x"}']
    assert found[0].source.endswith('d.json: panel 2 "Inner", target A')
    assert found[1].source.endswith("d.json: variable $queue")


def test_the_tool_fails_with_one_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "boards").mkdir()
    targets = [{"refId": "A", "expr": "sum(rate(missing_total[5m]))"}, {"refId": "B", "expr": "("}]
    (tmp_path / "boards" / "bad.json").write_text(json.dumps(board(targets, "label_values(x)")))
    listing = tmp_path / "metrics.txt"
    listing.write_text("present_total counter\n")
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: gone > 1\n")

    result = run_tool("--metrics", listing, "--rules", rules, "--dashboards", tmp_path / "boards")

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    assert 'panel 2 "Inner", target B: could not parse expression' in lines[0]
    assert lines[1].endswith("target A: names missing_total, not in the exported metrics list")
    assert 'group "g", rule 1 A: names gone' in lines[2]


def test_the_repository_dashboards_and_rules_pass() -> None:
    promtool()
    result = run_tool()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "parse and name only exported metrics" in result.stdout
    rules = rule_expressions(ROOT / "docker" / "monitoring" / "alert_rules.yml")
    assert len(rules) >= 6  # the rules were read, not an empty file
