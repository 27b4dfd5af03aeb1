"""docker/monitoring/exported_metrics.txt is exactly what a real worker and a real beat serve.

The list is what tools/promql_check.py lets dashboards and rules name, so a family missing from
it (a renamed counter) or listed but no longer served (a dashboard panel that would stay empty)
fails here. The test starts what exports metrics in production: a ``celery worker`` with
metrics and alerting on (as the compose file runs it), and a ``celery beat`` with its metrics
port, on a private Redis; runs a task that succeeds and one that fails, so the lazily created
series exist; and compares the union of the two scrapes with the list, by name and type.

It compares the union: where a cluster-wide family (queue length, workers up, sent counts,
domain counters) is served, by every worker or by the beat that holds the lock, does not matter
to the list. Every collector declares its families even before it has a series (their HELP and
TYPE lines are served), so no family waits for an event this test cannot produce. The one kind
of family left out is prometheus_client's ``<counter>_created`` gauge, served beside a
``Counter`` (the pa_alert* ones) once it has a series, i.e. once an alert was sent: a companion
of the listed counter, which no query names.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import APP, WorkerProcess, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LISTED = Path(__file__).resolve().parents[2] / "docker" / "monitoring" / "exported_metrics.txt"
Q = c.FILE_QUEUE
# The parser's type names to the list's ("unknown" is the text format's untyped).
TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary"}
TYPES["unknown"] = "untyped"


def listed() -> dict[str, str]:
    """The list: {name as queried: type}."""
    out: dict[str, str] = {}
    for raw in LISTED.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, kind = line.split()
            out[name] = kind
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def served(text: str) -> dict[str, str]:
    """The families of one /metrics page: {name as queried: type}, counters with _total."""
    found = {
        family.name + ("_total" if family.type == "counter" else ""): TYPES[family.type]
        for family in text_string_to_metric_families(text)
    }
    return {
        name: kind
        for name, kind in found.items()
        if not (name.endswith("_created") and found.get(f"{name[:-8]}_total") == "counter")
    }


def has_sample(text: str, metric: str, labels: dict[str, str]) -> bool:
    """A sample called ``metric`` whose labels include ``labels``."""
    return any(
        sample.name == metric and labels.items() <= sample.labels.items()
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


def scrape_once(port: int, *wanted: tuple[str, dict[str, str]]) -> str:
    """The page at ``port`` if it has a sample of each ``(name, labels)`` wanted, else ""
    (also while nothing listens there yet: beat starts its server after loading the app)."""
    try:
        text = scrape(port)
    except OSError:
        return ""
    return text if all(has_sample(text, metric, labels) for metric, labels in wanted) else ""


@pytest.fixture
def beat_port(redis_url: str, tmp_path: Path) -> Iterator[int]:
    """A ``celery beat`` of the deployment's app serving /metrics on the returned port."""
    port = free_port()
    env = worker_env(redis_url, {"BEAT_METRICS_PORT": str(port)})
    with (tmp_path / "beat.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, "beat", "-l", "info"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield port
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def test_the_list_is_exactly_the_families_a_worker_and_beat_serve(
    producer_app: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
    beat_port: int,
) -> None:
    worker_port = free_port()
    start_worker(
        [Q],
        env={
            "METRICS_PORT": str(worker_port),
            "METRICS_ENABLED": "true",
            "ALERTING_ENABLED": "true",
        },
    )
    producer_app.send_task("tests.noop", queue=Q).get(timeout=30)
    failed = producer_app.send_task("tests.fail_now", args=["listed"], queue=Q)
    failed.get(timeout=30, propagate=False)
    assert failed.failed()

    # The runs are counted in the worker's main process as the pool reports them: wait for
    # both series, and for the beat to take the lock (only the holder serves its entries).
    worker_text = wait_for(
        lambda: scrape_once(
            worker_port,
            ("celery_task_succeeded_total", {"name": "tests.noop"}),
            ("celery_task_failed_total", {"name": "tests.fail_now"}),
        ),
        timeout=30,
    )
    beat_text = wait_for(
        lambda: scrape_once(beat_port, ("pa_beat_entries", {"state": "enabled"})), timeout=30
    )
    assert has_sample(beat_text, "pa_beat_lock_held", {})

    union = served(worker_text) | served(beat_text)
    expected = listed()
    differences = {
        "served, not listed": sorted(set(union) - set(expected)),
        "listed, not served": sorted(set(expected) - set(union)),
        "served as another type": sorted(
            f"{name}: {kind}, listed {expected[name]}"
            for name, kind in union.items()
            if name in expected and expected[name] != kind
        ),
    }
    assert differences == {key: [] for key in differences}
