"""The parts of ``tune``'s measurement sources that need no server: the JSON form of a queue's
measurements, Prometheus durations, and the queries' metric names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from promql_check import load_exported, metric_names

from personal_assistant.workers.cli.tune_sources import (
    QUERIES,
    measurement_from_dict,
    window_seconds,
)
from personal_assistant.workers.utils.performance import QueueMeasurement

REPO = Path(__file__).resolve().parents[3]


def test_a_measurement_round_trips_through_its_json_form() -> None:
    m = QueueMeasurement(
        "email_tasks",
        arrival_rate=8.0,
        mean_runtime=0.5,
        depth=3,
        cpu_seconds_per_task=0.1,
        peak_rss_bytes=1024,
        replicas=2,
        runtime_basis="p95",
    )
    assert measurement_from_dict("email_tasks", m.to_dict()) == m


def test_a_measurement_may_leave_out_or_null_any_field() -> None:
    m = measurement_from_dict("ai_tasks", {"arrival_rate": 1, "depth": None})
    assert m == QueueMeasurement("ai_tasks", arrival_rate=1.0)
    assert isinstance(m.arrival_rate, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"arival_rate": 1}, "unknown field 'arival_rate'"),
        ({"arrival_rate": -1}, "arrival_rate: a finite number >= 0"),
        ({"arrival_rate": "8"}, "arrival_rate: a finite number >= 0"),
        ({"arrival_rate": True}, "arrival_rate: a finite number >= 0"),
        ({"depth": 2.5}, "depth: a whole number"),
        ({"mean_runtime": 0}, "mean_runtime: must be > 0"),
        ({"runtime_basis": "median"}, "runtime_basis: one of mean, p95"),
        ([1, 2], "expected an object of measurements"),
    ],
)
def test_a_bad_measurement_names_its_queue_and_field(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match="email_tasks") as caught:
        measurement_from_dict("email_tasks", data)
    assert message in str(caught.value)


def test_window_seconds_reads_prometheus_durations() -> None:
    assert window_seconds("15m") == 900
    assert window_seconds("1h30m") == 5400
    assert window_seconds("90s") == 90


@pytest.mark.parametrize("window", ["15", "15 m", "m", "15min", "-5m", "5m]"])
def test_window_seconds_rejects_what_prometheus_would_not_take(window: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        window_seconds(window)


def test_the_queries_name_only_exported_metrics() -> None:
    exported = load_exported(REPO / "docker" / "monitoring" / "exported_metrics.txt")
    for key, promql in QUERIES.items():
        names = metric_names(promql.format(w="15m"))
        assert names, key
        assert names <= exported, (key, names - exported)
