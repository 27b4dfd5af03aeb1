"""The alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``).

promtool is a real dependency of the test suite (``make test`` installs it with Debian's
``prometheus`` package): without it these tests fail, they are not skipped. promtool 2.42 does
not print how many cases it ran, so the tests prove it: every case's expectation is inverted in
a copy, and promtool must report every one of them as failed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docker" / "monitoring" / "alert_rules.yml"
RULES_TEST = ROOT / "docker" / "monitoring" / "alert_rules_test.yml"
EXPECTED_ALERTS = {
    "CeleryTaskFailureRateHigh",
    "CeleryTaskRuntimeP95High",
    "CeleryQueueBacklog",
    "CeleryWorkerDown",
    "CeleryWorkerMetricsAbsent",
    "CeleryBeatNotTicking",
}
# The metric names the workers export (prometheus_metrics.py, metrics_hook.py).
EXPORTED_METRICS = {
    "celery_task_failed_total",
    "celery_task_succeeded_total",
    "celery_task_runtime_bucket",
    "celery_queue_length",
    "celery_worker_up",
    "celery_beat_last_tick_timestamp_seconds",
}


def promtool_path() -> str:
    """promtool from PATH; its absence fails the test with how to get it (never a skip)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: `make test` installs it (Debian package `prometheus`, "
            "`apt-get install -y prometheus`); the alert rules cannot be checked without it",
            pytrace=False,
        )
    return path


def run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def cases(tests: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(group name, alertname, eval_time) of every alert_rule_test case."""
    return [
        (group["name"], case["alertname"], case["eval_time"])
        for group in tests["tests"]
        for case in group.get("alert_rule_test", [])
    ]


def test_rules_pass_promtool_check() -> None:
    promtool = promtool_path()
    result = run(promtool, "check", "rules", RULES)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Lint findings (duplicate rules) are printed as FAILED with exit code 0 by promtool 2.42.
    assert "FAILED" not in output, output
    found = re.search(r"SUCCESS: (\d+) rules found", output)
    assert found is not None, output
    assert int(found[1]) == len(rules())


def test_rule_unit_tests_pass() -> None:
    promtool = promtool_path()
    result = run(promtool, "test", "rules", RULES_TEST)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output, output
    assert "FAILED" not in output, output


def test_promtool_runs_every_case(tmp_path: Path) -> None:
    """Invert each case's expectation: promtool must report each one, so each one ran."""
    promtool = promtool_path()
    tests = load(RULES_TEST)
    expected = cases(tests)
    assert len(expected) >= 2 * len(EXPECTED_ALERTS)
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            if case.get("exp_alerts"):
                case["exp_alerts"] = []
            else:
                case["exp_alerts"] = [{"exp_labels": {"severity": "inverted"}}]
    shutil.copy(RULES, tmp_path / RULES.name)
    inverted = tmp_path / "inverted_test.yml"
    inverted.write_text(yaml.safe_dump(tests, sort_keys=False))

    result = run(promtool, "test", "rules", inverted)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    reported = re.findall(r"alertname: (\w+), time: (\S+?),", output)
    assert sorted(reported) == sorted((alert, time) for _, alert, time in expected), output
    for group in tests["tests"]:
        assert f"name: {group['name']}," in output, group["name"]


def test_each_alert_has_a_firing_and_a_quiet_case() -> None:
    defined = {rule["alert"] for rule in rules() if "alert" in rule}
    assert defined == EXPECTED_ALERTS
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in load(RULES_TEST)["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


def test_rules_use_the_exported_metrics_and_carry_severity_and_annotations() -> None:
    used = set()
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        used |= set(re.findall(r"\b(celery_[a-z_]+)\b", rule["expr"]))
    assert used == EXPORTED_METRICS


def test_worker_down_aggregates_by_hostname() -> None:
    """Worker states come from the beat holding the lock, and briefly from two beats during a
    handover (or from every worker, in releases before this one): a per-target `== 0` would
    page once per exporter."""
    (rule,) = [r for r in rules() if r.get("alert") == "CeleryWorkerDown"]
    assert re.sub(r"\s+", " ", rule["expr"]).strip() == "max by (hostname) (celery_worker_up) == 0"
    assert rule["for"] == "2m"
