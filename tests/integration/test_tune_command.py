"""``celery -A personal_assistant.workers.celery_app tune``: capacity plans from a recorded
metrics file, a real Redis with snapshots written by the workers' own writer, and a real HTTP
server on loopback answering Prometheus's API with recorded responses.

The queue is the hand-computed M/M/c case (tests/unit/utils/test_queueing.py): email_tasks at
8 tasks/s of 0.5 s runs, CPU-bound (0.3 s CPU per run: 60 %), peak RSS 100 MiB. Its answer:
a = 4, the smallest c with rho <= 0.8 and a p95 wait within email's 30 s is 5 (rho 0.80,
P(wait) = 128/231 = 0.554, mean wait 0.277 s, p95 wait 1.2 s; c = 4 is overloaded), as
2 replicas x 3 prefork slots (the deployed email worker has 4 per replica), and
WORKER_MAX_MEMORY_PER_CHILD = 100 MiB x 1.5 = 153,600 KiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.cli.tune_command import COMMAND_NAME
from personal_assistant.workers.cli.tune_sources import from_redis
from personal_assistant.workers.metrics.snapshots import write_snapshot
from personal_assistant.workers.monitoring.liveness import WorkerRegistry
from tests.support.redis_server import free_port
from tests.support.worker import APP, worker_env

pytestmark = pytest.mark.integration

ENTRY_POINT = "personal_assistant.workers.cli.tune_command:tune"
SEND_EMAIL = f"{c.TASKS_PACKAGE}.email_tasks.send_email"
MIB = 1024 * 1024
HAND_CASE: dict[str, Any] = {
    "arrival_rate": 8.0,
    "mean_runtime": 0.5,
    "depth": 3,
    "cpu_seconds_per_task": 0.3,
    "peak_rss_bytes": 100 * MIB,
    "replicas": 2,
    "runtime_basis": "mean",
}
HAND_PLAN = {
    "concurrency": 5,
    "replicas": 2,
    "per_replica": 3,
    "pool": "prefork",
    "max_memory_per_child_kib": 153_600,
}


def tune_env(broker_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment, wide enough that no table row wraps; adds the entry point if the
    installed package lacks it yet (a minimal ``.dist-info`` on PYTHONPATH, as pa-status's
    test does)."""
    env = worker_env(broker_url, {"COLUMNS": "220"})
    if not any(ep.value == ENTRY_POINT for ep in entry_points(group="celery.commands")):
        dist = tmp_path / "shim" / "pa_tune_shim-0.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pa-tune-shim\nVersion: 0\n")
        entry = f"[celery.commands]\n{COMMAND_NAME} = {ENTRY_POINT}\n"
        (dist / "entry_points.txt").write_text(entry)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "shim"), env["PYTHONPATH"]])
    return env


def run_tune(broker_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, COMMAND_NAME, *args],
        env=tune_env(broker_url, tmp_path),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def unreachable_redis() -> str:
    return f"redis://:very-secret@127.0.0.1:{free_port()}/0"


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error: ...`` line on stderr (and nothing on stdout)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def row(out: str, *cells: str) -> str:
    found = [line for line in out.splitlines() if all(cell in line for cell in cells)]
    assert found, f"no line with {cells} in:\n{out}"
    return found[0]


def assert_hand_case_table(out: str) -> None:
    row(out, "email_tasks: OK")
    row(out, "arrival rate (lambda)", "8.000 /s")
    row(out, "run time (1/mu)", "0.500 s")
    row(out, "CPU per run time", "60%", "CPU-bound")
    row(out, "offered load", "4.00")
    row(out, "utilisation (rho = a/c)", "0.80", "at c=5")
    row(out, "P(wait) (Erlang C)", "0.554")
    row(out, "mean wait (Wq)", "0.277 s")
    row(out, "p95 wait", "1.2 s")
    row(out, "Little's law", "4.00 running + 2.22 queued", "6.22 in the system")
    row(out, "now", "2 x 4 prefork")
    row(out, "recommended concurrency", " 5 ")
    row(out, "replicas x per replica", "2 x 3")
    row(out, "pool", "prefork")
    row(out, "max-memory-per-child", "153600 KiB")
    row(out, "why concurrency:", "c=5 gives rho 0.80", "c=4 would give rho 1.00: overloaded")
    row(out, "why memory:", "peak RSS 100 MiB x 1.5")


def assert_hand_case_json(data: dict[str, Any]) -> None:
    rec = data["recommendations"]["email_tasks"]
    assert rec["status"] == "ok"
    assert rec["recommended"] == HAND_PLAN
    model = rec["model"]
    assert model["servers"] == 5
    assert model["utilisation"] == pytest.approx(0.8)
    assert model["p_wait"] == pytest.approx(128 / 231, abs=1e-6)
    assert model["mean_wait"] == pytest.approx(0.277056277, abs=1e-6)
    assert model["quantile_wait"] == pytest.approx(1.202672, abs=1e-6)
    assert model["queue_length"] == pytest.approx(512 / 231, abs=1e-6)
    assert rec["current"]["concurrency"] == 8
    assert rec["current_model"]["utilisation"] == pytest.approx(0.5)
    assert rec["backlog"]["depth"] == 3
    assert rec["backlog"]["drain_s"] == pytest.approx(1.5)  # 3 / (10 - 8)


# --- a recorded metrics file ------------------------------------------------------------------


@pytest.fixture
def metrics_file(tmp_path: Path) -> Path:
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"email_tasks": HAND_CASE, "file_tasks": {"arrival_rate": 0}}))
    return path


def test_tune_prints_the_hand_computed_plan_from_a_file(metrics_file: Path, tmp_path: Path) -> None:
    result = run_tune(unreachable_redis(), tmp_path, "--from-file", str(metrics_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_hand_case_table(result.stdout)
    row(result.stdout, "file_tasks: IDLE")
    row(result.stdout, "why concurrency:", "no traffic: keep the minimum")
    row(result.stdout, "file_tasks", "idle", "1 x 2 prefork", "1 x 2 prefork", "256000")


def test_tune_json_from_a_file_holds_the_hand_computed_plan(
    metrics_file: Path, tmp_path: Path
) -> None:
    result = run_tune(unreachable_redis(), tmp_path, "--from-file", str(metrics_file), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["source"]["kind"] == "file"
    assert data["measured"]["email_tasks"] == HAND_CASE
    assert_hand_case_json(data)
    assert data["recommendations"]["file_tasks"]["status"] == "idle"

    # The output is itself a file of measurements: planned again, it gives the same plan.
    saved = tmp_path / "saved.json"
    saved.write_text(result.stdout)
    again = run_tune(unreachable_redis(), tmp_path, "--from-file", str(saved), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["recommendations"] == data["recommendations"]


def test_tune_target_wait_tightens_one_queue(metrics_file: Path, tmp_path: Path) -> None:
    result = run_tune(
        unreachable_redis(),
        tmp_path,
        "--from-file",
        str(metrics_file),
        "--target-wait",
        "email_tasks=1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rec = json.loads(result.stdout)["recommendations"]["email_tasks"]
    assert rec["target_wait_s"] == 1.0
    assert rec["recommended"]["concurrency"] == 6  # c=5 waits 1.2 s at p95, c=6 0.43 s


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ('{"email_tasks": {"arival_rate": 8}}', "unknown field 'arival_rate'"),
        ('{"email_tasks": {"arrival_rate": -8}}', "email_tasks.arrival_rate"),
        ("[]", "expected an object of queues"),
    ],
)
def test_tune_refuses_a_bad_file_in_one_line_with_exit_64(
    content: str | None, message: str, tmp_path: Path
) -> None:
    """Exit 64 (EX_USAGE): what the command line names is unusable."""
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    result = run_tune(unreachable_redis(), tmp_path, "--from-file", str(path))
    assert result.returncode == 64
    assert message in one_line_error(result)


def test_tune_refuses_bad_options_in_one_line_with_exit_64_or_clicks_2(
    metrics_file: Path, tmp_path: Path
) -> None:
    """64 for what tune checks, 2 for what click checks (as Celery's own commands exit)."""
    for args, message, code in (
        (["--max-concurrency-per-replica", "0"], "--max-concurrency-per-replica", 2),
        (["--bogus"], "No such option '--bogus' (see '", 2),
        (["--target-wait", "soon"], "--target-wait 'soon'", 64),
        (["--target-wait", "nope_tasks=3"], "no measurements of queue 'nope_tasks'", 64),
        (["--prometheus", "http://127.0.0.1:1"], "two sources", 64),
    ):
        result = run_tune(unreachable_redis(), tmp_path, "--from-file", str(metrics_file), *args)
        assert result.returncode == code, (args, result.stderr)
        assert message in one_line_error(result)


# --- the broker's Redis ------------------------------------------------------------------------


def record_hand_case(client: redis.Redis, app: WorkerApp, now: float) -> None:
    """Two workers' snapshots 10 s apart (4 runs/s each), their heartbeats, three messages."""
    for host, before, after in (("a@host", 100, 140), ("b@host", 50, 90)):
        stats = {"failed": 0, "p95": 1.4, "avg_time": 0.5, "avg_cpu_time": 0.3}
        write_snapshot(client, host, {SEND_EMAIL: {"count": before, **stats}}, now - 11)
        stats["max_memory"] = 100 * MIB if host == "a@host" else 60 * MIB
        write_snapshot(client, host, {SEND_EMAIL: {"count": after, **stats}}, now - 1)
        WorkerRegistry(client).beat(host, queues=[c.EMAIL_QUEUE], pid=1, now=now - 1)
    for _ in range(3):
        app.send_task(SEND_EMAIL, queue=c.EMAIL_QUEUE)


def test_tune_plans_from_the_brokers_redis(
    producer_app: WorkerApp, redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    record_hand_case(redis_client, producer_app, time.time())

    result = run_tune(redis_url, tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["source"]["kind"] == "redis"
    assert data["measured"]["email_tasks"] == pytest.approx(HAND_CASE)
    assert_hand_case_json(data)
    assert data["recommendations"]["ai_tasks"]["status"] == "idle"

    table = run_tune(redis_url, tmp_path)
    assert table.returncode == 0, table.stderr
    assert_hand_case_table(table.stdout)


def test_tune_weighs_run_times_by_runs_and_falls_back_to_p95(redis_client: redis.Redis) -> None:
    now = 1_700_000_000.0
    sync = f"{c.TASKS_PACKAGE}.sync_tasks.sync_calendar_events"
    write_snapshot(redis_client, "a@h", {SEND_EMAIL: {"count": 30, "avg_time": 1.0}}, now - 20)
    write_snapshot(redis_client, "a@h", {SEND_EMAIL: {"count": 60, "avg_time": 1.0}}, now - 10)
    write_snapshot(redis_client, "b@h", {SEND_EMAIL: {"count": 20, "avg_time": 4.0}}, now - 10)
    # Only a p95 for sync (the snapshots of today's workers): taken as an upper bound.
    write_snapshot(redis_client, "c@h", {sync: {"count": 5, "p95": 2.0}}, now - 20)
    write_snapshot(redis_client, "c@h", {sync: {"count": 7, "p95": 2.0}}, now - 10)
    # A stale worker: its runs count in the means, its old rate does not.
    write_snapshot(redis_client, "old@h", {SEND_EMAIL: {"count": 0}}, now - 1000)
    write_snapshot(redis_client, "old@h", {SEND_EMAIL: {"count": 900}}, now - 990)

    measured = from_redis(redis_client, now, down_after=30.0)

    email = measured[c.EMAIL_QUEUE]
    assert email.arrival_rate == pytest.approx(3.0)  # a@h: 30 runs in 10 s; b@h has no prev
    assert email.mean_runtime == pytest.approx((60 * 1.0 + 20 * 4.0) / 80)
    assert (email.runtime_basis, email.depth, email.replicas) == ("mean", 0, None)
    sync_queue = measured[c.SYNC_QUEUE]
    assert (sync_queue.mean_runtime, sync_queue.runtime_basis) == (2.0, "p95")
    assert sync_queue.arrival_rate == pytest.approx(0.2)
    assert measured[c.AI_QUEUE].arrival_rate is None


def test_tune_without_snapshots_says_so_in_one_line(redis_url: str, tmp_path: Path) -> None:
    result = run_tune(redis_url, tmp_path)
    assert result.returncode == 1
    assert "no metric snapshots" in one_line_error(result)


def test_tune_reports_an_unreachable_redis_in_one_line_with_exit_69(tmp_path: Path) -> None:
    result = run_tune(unreachable_redis(), tmp_path)
    assert result.returncode == 69
    line = one_line_error(result)
    assert line.startswith("Error: cannot reach Redis at redis://:****@127.0.0.1:")
    assert line.endswith(": Connection refused")
    assert "very-secret" not in result.stderr


# --- Prometheus ---------------------------------------------------------------------------------


def vector(**by_queue: float | str) -> dict[str, Any]:
    """A recorded instant-query answer: one sample per queue_name."""
    result = [
        {"metric": {"queue_name": queue}, "value": [1_700_000_000.0, str(value)]}
        for queue, value in by_queue.items()
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


# What Prometheus answered to each query over a 5-minute window (values of the hand case; the
# runtime of file_tasks is 0/0 there, which Prometheus answers as NaN).
RECORDED: dict[str, dict[str, Any]] = {
    "sum by (queue_name) (rate(celery_task_sent_total[5m]))": vector(email_tasks=7.5),
    "sum by (queue_name) (rate(celery_task_received_total[5m]))": vector(
        email_tasks=8, file_tasks=0
    ),
    "sum by (queue_name) (rate(celery_task_runtime_sum[5m]))"
    " / sum by (queue_name) (rate(celery_task_runtime_count[5m]))": vector(
        email_tasks=0.5, file_tasks="NaN"
    ),
    "sum by (queue_name) (rate(celery_task_cpu_seconds_total[5m]))"
    " / sum by (queue_name) (rate(celery_task_runtime_count[5m]))": vector(email_tasks=0.3),
    "max by (queue_name) (celery_queue_length)": vector(email_tasks=3, file_tasks=0),
    "max by (queue_name) (max_over_time(celery_task_max_rss_bytes[5m]))": vector(
        email_tasks=100 * MIB
    ),
    "count by (queue_name) (count by (queue_name, hostname) (celery_task_received_total))": (
        vector(email_tasks=2, file_tasks=1)
    ),
}


class RecordedPrometheus:
    """A real HTTP server on loopback answering /api/v1/query from RECORDED (400 otherwise)."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.queries: list[str] = []
        seen = self.queries

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query).get("query", [""])[0]
                seen.append(query)
                known = url.path == "/api/v1/query" and query in answers
                body = answers[query] if known else {"status": "error", "error": "bad query"}
                payload = json.dumps(body).encode()
                self.send_response(200 if known else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: pytest's output is for failures."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def prometheus() -> Iterator[RecordedPrometheus]:
    server = RecordedPrometheus(RECORDED)
    yield server
    server.close()


def test_tune_plans_from_prometheus(prometheus: RecordedPrometheus, tmp_path: Path) -> None:
    result = run_tune(
        unreachable_redis(), tmp_path, "--prometheus", prometheus.url, "--window", "5m", "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(prometheus.queries) == sorted(RECORDED)
    data = json.loads(result.stdout)
    assert data["source"] == {
        "kind": "prometheus",
        "url": prometheus.url,
        "window": "5m",
        "file": None,
    }
    # The larger of sent (7.5/s) and received (8/s) is the arrival rate.
    assert data["measured"]["email_tasks"] == pytest.approx(HAND_CASE)
    assert_hand_case_json(data)
    file_tasks = data["measured"]["file_tasks"]
    assert (file_tasks["arrival_rate"], file_tasks["mean_runtime"]) == (0.0, None)
    assert set(data["measured"]) == set(c.QUEUES)

    table = run_tune(
        unreachable_redis(), tmp_path, "--prometheus", prometheus.url, "--window", "5m"
    )
    assert table.returncode == 0, table.stderr
    assert_hand_case_table(table.stdout)
    row(table.stdout, f"measured from Prometheus {prometheus.url} over 5m")


def test_tune_reports_a_prometheus_error_in_one_line(tmp_path: Path) -> None:
    server = RecordedPrometheus({})  # every query answered 400, as Prometheus does a bad one
    try:
        result = run_tune(unreachable_redis(), tmp_path, "--prometheus", server.url)
    finally:
        server.close()
    assert result.returncode == 1
    assert "answered 400" in one_line_error(result)


def test_tune_reports_an_unreachable_prometheus_in_one_line_with_exit_69(tmp_path: Path) -> None:
    url = f"http://admin:very-secret@127.0.0.1:{free_port()}"
    result = run_tune(unreachable_redis(), tmp_path, "--prometheus", url)
    assert result.returncode == 69
    assert "cannot reach Prometheus at http://admin:****@127.0.0.1" in one_line_error(result)
    assert "very-secret" not in result.stderr


def test_tune_refuses_a_bad_window_in_one_line(tmp_path: Path) -> None:
    args = ["--prometheus", "http://127.0.0.1:1", "--window", "5 min"]
    result = run_tune(unreachable_redis(), tmp_path, *args)
    assert result.returncode == 64
    assert "not a Prometheus duration" in one_line_error(result)
