"""The Grafana dashboards are valid, use the provisioned datasource, and show what the issue asks.

Whether each expression parses and names only exported metrics is tools/promql_check.py's job
(tests/unit/tools/test_promql_check.py runs it on these files); here: the dashboards' structure,
the provisioning that loads them, and the panels' contents.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docker" / "monitoring"
GRAFANA = MONITORING / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
OVERVIEW = DASHBOARDS / "overview.json"
DRILLDOWN = DASHBOARDS / "task-drilldown.json"
WORKER_SERVICES = ("ai_worker", "email_worker", "file_worker", "sync_worker", "maintenance_worker")

# The overview's panels the issue names, each with the metric its queries must read.
OVERVIEW_PANELS = {
    "Throughput per queue": "celery_task_succeeded_total",
    "Failure rate per queue": "celery_task_failed_total",
    "Run time p50 / p95 / p99 per queue": "celery_task_runtime_bucket",
    "Queue wait p50 / p95 / p99 per queue": "celery_task_queue_wait_time_bucket",
    "Queue depth": "celery_queue_length",
    "Workers up": "celery_worker_up",
    "Retries per queue": "celery_task_retried_total",
    "Dead letters per queue": "celery_task_failed_total",
    "Firing alerts": "ALERTS",
    "In-process alerts sent": "pa_alerts_sent_total",
    "E-mail": "pa_email_sent_total",
    "Calendar sync": "pa_calendar_events_upserted_total",
    "AI requests": "pa_ai_requests_total",
    "AI tokens": "pa_ai_tokens_total",
    "Beat last tick age": "celery_beat_last_tick_timestamp_seconds",
    "Beat entry runs": "pa_beat_entry_runs_total",
    "Beat skips by reason": "pa_beat_entry_skips_total",
}
QUANTILE_PANELS = (
    "Run time p50 / p95 / p99 per queue",
    "Queue wait p50 / p95 / p99 per queue",
)


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, those nested in rows included."""
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels") or []))
    return out


def query_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show data (rows only group them)."""
    return [p for p in all_panels(board["panels"]) if p["type"] != "row"]


def by_title(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {panel["title"]: panel for panel in query_panels(board)}


def provisioned_uid() -> str:
    data = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = data["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    return str(source["uid"])


@pytest.fixture(params=[OVERVIEW, DRILLDOWN], ids=lambda path: path.name)
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    path: Path = request.param
    return load(path)


def test_the_dashboard_directory_holds_exactly_the_two_dashboards() -> None:
    assert sorted(p.name for p in DASHBOARDS.iterdir()) == ["overview.json", "task-drilldown.json"]
    assert load(OVERVIEW)["uid"] != load(DRILLDOWN)["uid"]


def test_a_dashboard_is_a_current_grafana_model_with_unique_panel_ids(
    board: dict[str, Any],
) -> None:
    assert board["schemaVersion"] >= 39
    assert board["uid"] and board["title"]
    ids = [panel["id"] for panel in all_panels(board["panels"])]
    assert len(ids) == len(set(ids)), ids
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_every_panel_queries_the_provisioned_datasource(board: dict[str, Any]) -> None:
    uid = provisioned_uid()
    for panel in query_panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == uid, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_fit_the_grid_without_overlapping(board: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(board["panels"]):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_variables_come_from_label_values_of_the_provisioned_datasource() -> None:
    uid = provisioned_uid()
    expected = {OVERVIEW: {"queue"}, DRILLDOWN: {"queue", "task"}}
    for path, names in expected.items():
        variables = {v["name"]: v for v in load(path)["templating"]["list"]}
        assert set(variables) == names, path.name
        for variable in variables.values():
            assert variable["type"] == "query"
            assert variable["datasource"]["uid"] == uid
            assert re.fullmatch(r"label_values\(.+, \w+\)", variable["query"]["query"])
    task = {v["name"]: v for v in load(DRILLDOWN)["templating"]["list"]}["task"]
    assert task["query"]["query"].endswith(", name)")
    assert task["multi"] is False  # the drill-down's queries match one name exactly


def test_the_overview_has_the_panels_the_issue_lists_reading_their_metrics() -> None:
    panels = by_title(load(OVERVIEW))
    missing = sorted(set(OVERVIEW_PANELS) - set(panels))
    assert not missing, missing
    for title, metric in OVERVIEW_PANELS.items():
        exprs = " ".join(t["expr"] for t in panels[title]["targets"])
        assert re.search(rf"\b{metric}\b", exprs), f"{title} does not read {metric}"


def test_quantile_panels_show_p50_p95_and_p99_per_queue() -> None:
    panels = by_title(load(OVERVIEW))
    for title in QUANTILE_PANELS:
        exprs = [t["expr"] for t in panels[title]["targets"]]
        quantiles = sorted(float(re.findall(r"histogram_quantile\(([\d.]+)", e)[0]) for e in exprs)
        assert quantiles == [0.5, 0.95, 0.99], title
        assert all("sum by (queue_name, le)" in e for e in exprs), title


def test_overview_queries_follow_the_queue_variable_where_series_have_a_queue() -> None:
    for panel in query_panels(load(OVERVIEW)):
        for target in panel["targets"]:
            if re.search(r"\bcelery_(task|queue)_\w+", target["expr"]):
                assert 'queue_name=~"$queue"' in target["expr"], panel["title"]


def test_every_drilldown_query_is_about_the_chosen_task() -> None:
    for panel in query_panels(load(DRILLDOWN)):
        for target in panel["targets"]:
            selectors = re.findall(r"\w+\{[^}]*\}", target["expr"])
            assert selectors, panel["title"]
            for selector in selectors:
                assert 'name="$task"' in selector, f"{panel['title']}: {selector}"


def test_the_drilldown_breaks_the_task_down_by_hostname_and_exception() -> None:
    exprs = " ".join(t["expr"] for p in query_panels(load(DRILLDOWN)) for t in p["targets"])
    assert "by (hostname)" in exprs
    assert "by (exception)" in exprs
    assert "celery_task_runtime_bucket" in exprs
    assert "celery_task_queue_wait_time_bucket" in exprs
    assert "celery_task_retried_total" in exprs


def test_the_provider_loads_the_dashboards_from_files_grafana_cannot_change() -> None:
    data = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["allowUiUpdates"] is False
    for path in (OVERVIEW, DRILLDOWN):
        assert load(path)["editable"] is False


def test_the_scrape_labels_the_panels_group_by_exist_in_prometheus_yml() -> None:
    """Panels group workers by `job` (the compose service) and `queue`: prometheus.yml must
    make one DNS-discovered job per worker service with that target label."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service in WORKER_SERVICES:
        job = jobs[service]
        (sd,) = job["dns_sd_configs"]
        assert sd == {"names": [service], "type": "A", "port": 9808, "refresh_interval": "30s"}
        queue = service.removesuffix("_worker") + "_tasks"
        assert {"target_label": "queue", "replacement": queue} in job["relabel_configs"]
    assert jobs["scheduler"]["dns_sd_configs"][0]["port"] == 9808
    exprs = " ".join(t["expr"] for p in query_panels(load(OVERVIEW)) for t in p["targets"])
    (pattern,) = re.findall(r'up\{job=~"([^"]+)"\}', exprs)
    assert sorted(j for j in jobs if re.fullmatch(pattern, j)) == sorted(WORKER_SERVICES)
