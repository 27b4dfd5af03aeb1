"""Check that every PromQL expression of the Grafana dashboards and the alert rules parses and
names only metrics the package exports (docker/monitoring/exported_metrics.txt).

Expressions are every panel target's ``expr`` and every query variable's ``label_values(...)``
selector in the dashboards, and every rule's ``expr`` in the rule files. Grafana's variables
are replaced first (``$__rate_interval`` and the other durations by ``5m``, ``$queue`` and the
like by ``x``), so what is checked is what Prometheus would receive.

Parsing is Prometheus's own: the expressions are written as recording rules to a temporary
rules file and checked with ``promtool check rules`` (promtool on PATH, Debian's package
``prometheus``), and each error is mapped back to its panel or rule. Metric names are found by
a small tokenizer (:func:`metric_names`): an identifier that is not a function, an aggregation,
a keyword or a number, outside label matchers, ranges and the label lists of by/without/on/
ignoring/group_left/group_right. A name passes when the list has it (a histogram's
``_bucket``/``_sum``/``_count`` included) or it is Prometheus's own (``up``, ``ALERTS``,
``ALERTS_FOR_STATE``).

Usage: ``python tools/promql_check.py [--metrics FILE] [--rules FILE ...] [--dashboards PATH
...] [--promtool PATH]``; the defaults are the repository's files. Exit 0 with a one-line
summary, or exit 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "docker" / "monitoring"
DEFAULT_METRICS = MONITORING / "exported_metrics.txt"
DEFAULT_RULES = (MONITORING / "alert_rules.yml",)
DEFAULT_DASHBOARDS = (MONITORING / "grafana" / "dashboards",)

#: Series Prometheus makes itself: scrape health and the rules' alert state.
PROMETHEUS_OWN = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
#: The series names each listed type stands for (a histogram is listed by its base name).
TYPE_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "untyped": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
#: Grafana's duration variables; any duration parses, and a rate needs one.
_DURATION_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "5m",
    "__range": "5m",
    "__interval_ms": "300000",
    "__range_ms": "300000",
    "__range_s": "300",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*),\s*[A-Za-z_]\w*\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((.*)\)\s*$", re.DOTALL)

# Identifiers that are never metric names: binary operators, modifiers, number literals and the
# aggregation operators (which may be followed by `by (...)` rather than by a parenthesis).
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
    | {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
# Keywords whose parenthesised list holds label names, not expressions.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<comment>\#[^\n]*)
    |(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<matchers>\{)
    |(?P<range>\[[^\]]*\])
    |(?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:ms|[smhdwy])?
                (?:[0-9]+(?:ms|[smhdwy]))*)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(?:"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)')""")


@dataclass(frozen=True)
class Expression:
    """One PromQL expression as written, and where it was found (for the problem lines)."""

    source: str
    text: str


def _shown(path: Path) -> str:
    """The path relative to the repository when it is inside it (shorter problem lines)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def load_exported(path: Path) -> frozenset[str]:
    """Every series name the list allows: each family's names for its type, and Prometheus's.

    Lines are ``name type``; blank lines and ``#`` comments are skipped. A malformed line or an
    unknown type raises ValueError naming the line.
    """
    names: set[str] = set(PROMETHEUS_OWN)
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in TYPE_SUFFIXES:
            raise ValueError(
                f"{_shown(path)}:{number}: expected '<metric name> <type>' with a type of "
                f"{', '.join(TYPE_SUFFIXES)}, got {raw!r}"
            )
        names.update(parts[0] + suffix for suffix in TYPE_SUFFIXES[parts[1]])
    return frozenset(names)


def _panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, the ones inside (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def _variable_query(variable: dict[str, Any]) -> str | None:
    """The PromQL inside a query variable's ``label_values(...)`` or ``query_result(...)``."""
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    if not isinstance(query, str):
        return None
    for pattern in (_LABEL_VALUES, _QUERY_RESULT):
        found = pattern.match(query)
        if found:
            return found[1]
    return None  # label_values(label), label_names(), metrics(...): no expression to check


def dashboard_expressions(path: Path) -> list[Expression]:
    """Every panel target's ``expr`` and every query variable's expression of one dashboard."""
    board = json.loads(path.read_text())
    out: list[Expression] = []
    for panel in _panels(board.get("panels") or []):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if isinstance(expr, str) and expr.strip():
                where = (
                    f'{_shown(path)}: panel {panel.get("id")} "{panel.get("title", "")}", '
                    f"target {target.get('refId', '?')}"
                )
                out.append(Expression(where, expr))
    for variable in (board.get("templating") or {}).get("list") or []:
        if variable.get("type") == "query":
            expr = _variable_query(variable)
            if expr is not None:
                where = f"{_shown(path)}: variable ${variable.get('name', '?')}"
                out.append(Expression(where, expr))
    return out


def rule_expressions(path: Path) -> list[Expression]:
    """Every rule's ``expr`` of one Prometheus rules file."""
    data = yaml.safe_load(path.read_text()) or {}
    out: list[Expression] = []
    for group in data.get("groups") or []:
        for index, rule in enumerate(group.get("rules") or [], start=1):
            name = rule.get("alert") or rule.get("record") or "?"
            where = f'{_shown(path)}: group "{group.get("name", "?")}", rule {index} {name}'
            out.append(Expression(where, str(rule.get("expr", ""))))
    return out


def to_promql(text: str) -> str:
    """``text`` with Grafana's variables replaced: durations by a duration, the rest by ``x``
    (they stand in label values: ``queue_name=~"$queue"``)."""

    def value(found: re.Match[str]) -> str:
        name = found[1] or found[2] or found[3]
        return _DURATION_VARIABLES.get(name, "x")

    return _VARIABLE.sub(value, text)


def _matching(text: str, start: int, opening: str, closing: str) -> int:
    """The index just past the ``closing`` that matches the ``opening`` at ``start``; strings
    are skipped (a ``}`` in a label value closes nothing). The end of text if unmatched."""
    depth, position = 0, start
    while position < len(text):
        string = _STRING.match(text, position)
        if string:
            position = string.end()
            continue
        char = text[position]
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    return len(text)


def _next_char(text: str, position: int) -> str:
    """The first character at or after ``position`` that is not white space ('' at the end)."""
    rest = text[position:].lstrip()
    return rest[:1]


def metric_names(promql: str) -> set[str]:
    """The metric names an expression selects (Grafana variables already replaced)."""
    names: set[str] = set()
    position = 0
    while position < len(promql):
        token = _TOKEN.match(promql, position)
        if token is None:  # unreachable: `other` matches any character
            break
        kind, position = token.lastgroup, token.end()
        if kind == "matchers":
            end = _matching(promql, token.start(), "{", "}")
            for found in _NAME_MATCHER.finditer(promql, token.start(), end):
                names.add(found[1] if found[1] is not None else found[2])
            position = end
        elif kind == "ident":
            word, following = token[0], _next_char(promql, position)
            if word.lower() in _LABEL_LISTS:
                if following == "(":
                    position = _matching(promql, promql.index("(", position), "(", ")")
            elif word.lower() not in _KEYWORDS and following != "(":
                names.add(word)
    return names


def name_problems(expressions: Iterable[Expression], exported: frozenset[str]) -> list[str]:
    """One line per expression naming a metric the list does not have."""
    problems = []
    for expression in expressions:
        unknown = sorted(metric_names(to_promql(expression.text)) - exported)
        if unknown:
            problems.append(
                f"{expression.source}: names {', '.join(unknown)}, not in the exported metrics list"
            )
    return problems


def parse_problems(expressions: Sequence[Expression], promtool: str = "promtool") -> list[str]:
    """One line per expression Prometheus's parser rejects (promtool check rules)."""
    if not expressions:
        return []
    rules = [
        {"record": f"promql_check_{index}", "expr": to_promql(expression.text)}
        for index, expression in enumerate(expressions)
    ]
    with tempfile.TemporaryDirectory(prefix="promql_check_") as directory:
        path = Path(directory) / "expressions.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "promql_check", "rules": rules}]}))
        result = subprocess.run(  # noqa: S603 (promtool from the caller or PATH, no shell)
            [promtool, "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    output = result.stdout + result.stderr
    problems = [
        f"{expressions[int(found[1])].source}: {found[2].strip()}"
        for found in re.finditer(r'"promql_check_(\d+)": (.*)', output)
    ]
    if result.returncode != 0 and not problems:
        problems.append(f"promtool check rules failed: {' '.join(output.split())}")
    return problems


def _dashboard_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; print the problems (or a summary) and return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--metrics", type=Path, default=DEFAULT_METRICS)
    parser.add_argument("--rules", type=Path, nargs="*", default=list(DEFAULT_RULES))
    parser.add_argument("--dashboards", type=Path, nargs="*", default=list(DEFAULT_DASHBOARDS))
    parser.add_argument("--promtool", default="promtool")
    args = parser.parse_args(argv)

    promtool = shutil.which(args.promtool)
    if promtool is None:
        print(f"promtool not found ({args.promtool}): apt-get install prometheus")
        return 1
    try:
        exported = load_exported(args.metrics)
        dashboards = _dashboard_files(args.dashboards)
        expressions = [e for path in dashboards for e in dashboard_expressions(path)]
        expressions += [e for path in args.rules for e in rule_expressions(path)]
    except (OSError, ValueError) as error:  # json.JSONDecodeError and yaml errors included
        print(error)
        return 1
    except yaml.YAMLError as error:
        print(" ".join(str(error).split()))
        return 1
    problems = parse_problems(expressions, promtool) + name_problems(expressions, exported)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(
        f"promql_check: {len(expressions)} expressions ({len(dashboards)} dashboards, "
        f"{len(args.rules)} rule files) parse and name only exported metrics"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
