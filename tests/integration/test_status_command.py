"""``celery -A personal_assistant.workers.celery_app pa-status`` against a real Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.cli.status_command import (
    BEAT_DOWN_AFTER_S,
    COMMAND_NAME,
    collect_status,
    status,
)
from personal_assistant.workers.dead_letters.queue import DeadLetter, DeadLetterQueue
from personal_assistant.workers.metrics.snapshots import write_snapshot
from personal_assistant.workers.monitoring.liveness import BeatLiveness, WorkerRegistry
from tests.support.worker import APP, worker_env

pytestmark = pytest.mark.integration

PROBE = f"{c.TASKS_PACKAGE}.file_tasks.probe"
ENTRY_POINT = "personal_assistant.workers.cli.status_command:status"


def _registered() -> bool:
    return any(ep.value == ENTRY_POINT for ep in entry_points(group="celery.commands"))


def status_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment; adds the entry point if the installed package lacks it yet.

    The shim is a minimal ``.dist-info`` on PYTHONPATH: importlib.metadata finds its
    ``celery.commands`` entry point exactly as it finds the installed package's.
    """
    env = worker_env(redis_url)
    if not _registered():
        shim = tmp_path / "shim"
        dist = shim / "pa_status_shim-0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pa-status-shim\nVersion: 0\n")
        (dist / "entry_points.txt").write_text(
            f"[celery.commands]\n{COMMAND_NAME} = {ENTRY_POINT}\n"
        )
        env["PYTHONPATH"] = os.pathsep.join([str(shim), env["PYTHONPATH"]])
    return env


def run_status(redis_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, COMMAND_NAME, *args],
        env=status_env(redis_url, tmp_path),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.fixture
def populated(producer_app: WorkerApp, redis_client: redis.Redis) -> dict[str, Any]:
    """Messages, heartbeats, metric snapshots and a dead letter, as a running system leaves them."""
    now = time.time()
    for priority in (9, 5, 5, 0):
        producer_app.send_task(PROBE, queue=c.FILE_QUEUE, priority=priority)
    producer_app.send_task(f"{c.TASKS_PACKAGE}.ai_tasks.probe", queue=c.AI_QUEUE, priority=9)

    registry = WorkerRegistry(redis_client)
    registry.beat("alive@host", queues=[c.FILE_QUEUE], pid=11, now=now - 1)
    registry.beat("dead@host", queues=[c.AI_QUEUE], pid=22, now=now - 300)
    registry.beat("gone@host", queues=[c.SYNC_QUEUE], pid=33, now=now - 600)
    registry.forget("gone@host", now=now - 590)

    task = f"{c.TASKS_PACKAGE}.file_tasks.probe"
    write_snapshot(redis_client, "alive@host", {task: {"count": 100, "failed": 1}}, now - 11)
    write_snapshot(
        redis_client, "alive@host", {task: {"count": 150, "failed": 3, "p95": 0.25}}, now - 1
    )
    DeadLetterQueue(redis_client).add(
        DeadLetter(
            task_name="personal_assistant.workers.tasks.email_tasks.send_email",
            task_id="t-1",
            args=["someone@example.com"],
            kwargs={},
            exception_type="PermanentError",
            exception="mailbox does not exist",
            traceback="Traceback ...",
            queue=c.EMAIL_QUEUE,
        )
    )
    return {"now": now, "task": task}


def test_a_plugin_named_status_would_be_shadowed_by_celerys_own() -> None:
    """Why ours is pa-status: Celery adds its built-ins after the plugins, replacing by name."""
    from celery.bin.celery import celery  # noqa: PLC0415 - the CLI group, loaded on demand

    builtin = celery.commands["status"]
    assert builtin is not status
    assert builtin.callback is not None
    assert builtin.callback.__module__ == "celery.bin.control"
    assert status.name == COMMAND_NAME


def test_status_shows_queues_workers_rates_and_failures(
    populated: dict[str, Any], redis_url: str, tmp_path: Path
) -> None:
    result = run_status(redis_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = out.splitlines()

    def row(*cells: str) -> str:
        found = [line for line in lines if all(cell in line for cell in cells)]
        assert found, f"no line with {cells} in:\n{out}"
        return found[0]

    row(c.FILE_QUEUE, " 4 ")
    row(c.AI_QUEUE, " 1 ")
    row(c.EMAIL_QUEUE, " 0 ")
    row("alive@host", "UP")
    row("dead@host", "DOWN", "m ago")
    row("gone@host", "STOPPED")
    row("file_tasks.probe", "5.00", "150", "3", "0.250s")
    row("email_tasks.send_email", f"({c.EMAIL_QUEUE})")
    row("PermanentError: mailbox does not exist")
    row("beat NEVER, never, lock held by nobody")
    row("problem: worker dead@host is down: last heartbeat 5m ago")
    assert max(map(len, lines)) <= 80  # not a terminal: rich's 80 columns


def test_status_json(populated: dict[str, Any], redis_url: str, tmp_path: Path) -> None:
    result = run_status(redis_url, tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)

    assert data["queues"] == {
        c.AI_QUEUE: 1,
        c.EMAIL_QUEUE: 0,
        c.FILE_QUEUE: 4,
        c.SYNC_QUEUE: 0,
        c.MAINTENANCE_QUEUE: 0,
    }
    states = {w["hostname"]: w["state"] for w in data["workers"]}
    assert states == {"alive@host": "up", "dead@host": "down", "gone@host": "stopped"}
    task = data["tasks"][populated["task"]]
    assert task["rate"] == pytest.approx(5.0)
    assert (task["count"], task["failed"], task["p95"]) == (150, 3, 0.25)
    assert data["dead_letters_total"] == 1
    assert data["failures"][0]["exception"] == "mailbox does not exist"
    assert data["beat"] == {
        "state": "never",
        "last_tick": None,
        "age_seconds": None,
        "down_after": BEAT_DOWN_AFTER_S,
        "lock_holder": None,
    }
    assert data["problems"] == [
        "worker dead@host is down: last heartbeat 5m ago",
        f"queue {c.AI_QUEUE}: 1 message(s) waiting and no worker up consumes it",
        "beat has never ticked against this Redis (is a beat running?)",
    ]


def test_status_reports_an_unreachable_broker_masked(tmp_path: Path) -> None:
    from tests.support.redis_server import free_port  # noqa: PLC0415

    url = f"redis://:very-secret@127.0.0.1:{free_port()}/0"
    result = run_status(url, tmp_path)
    assert result.returncode == 69
    assert result.stderr.splitlines() == [
        f"Error: cannot reach Redis at {url.replace('very-secret', '****')}: Connection refused"
    ]
    assert "very-secret" not in result.stdout + result.stderr


def test_collect_status_aggregates_hosts(redis_client: redis.Redis) -> None:
    """Rates sum over fresh hosts, p95 is the worst host's, stale snapshots leave the rates."""
    now = 1_700_000_000.0
    for host, counts, p95 in (("a@h", (10, 30), 0.1), ("b@h", (5, 15), 0.4)):
        write_snapshot(redis_client, host, {"t": {"count": counts[0]}}, now - 20)
        write_snapshot(redis_client, host, {"t": {"count": counts[1], "p95": p95}}, now - 10)
    write_snapshot(redis_client, "old@h", {"t": {"count": 1}}, now - 1000)
    write_snapshot(redis_client, "old@h", {"t": {"count": 1001}}, now - 990)

    data = collect_status(redis_client, now=now)

    row = data["tasks"]["t"]
    assert row["rate"] == pytest.approx(2.0 + 1.0)  # old@h's 100/s is history, not now
    assert row["count"] == 30 + 15 + 1001
    assert row["p95"] == 0.4
    assert sorted(row["hosts"]) == ["a@h", "b@h", "old@h"]
    assert data["stale_snapshots"] == ["old@h"]
    assert data["workers"] == []
    assert data["failures"] == []


def healthy(client: redis.Redis, now: float) -> None:
    """One worker up on every queue and a beat that ticked, as a healthy system leaves them."""
    WorkerRegistry(client).beat("all@host", queues=list(c.QUEUES), pid=1, now=now - 1)
    BeatLiveness(client).tick(now - 5)


def test_check_of_a_healthy_system_prints_one_summary_line_and_exits_0(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    healthy(redis_client, time.time())
    WorkerRegistry(redis_client).beat("gone@host", queues=[c.AI_QUEUE], pid=2)
    WorkerRegistry(redis_client).forget("gone@host")  # a clean stop is no problem

    result = run_status(redis_url, tmp_path, "--check")

    assert result.returncode == 0, result.stdout + result.stderr
    [line] = result.stdout.splitlines()
    assert re.fullmatch(
        r"ok: 1 worker\(s\) up, beat ticked \d+s ago, 0 message\(s\) waiting, 0 dead letter\(s\)",
        line,
    ), line


def test_check_prints_a_line_per_problem_and_exits_1_when_a_worker_is_down(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    now = time.time()
    healthy(redis_client, now)
    WorkerRegistry(redis_client).beat("ai@host", queues=[c.AI_QUEUE], pid=3, now=now - 600)

    result = run_status(redis_url, tmp_path, "--check")
    as_json = run_status(redis_url, tmp_path, "--check", "--json")

    assert result.returncode == 1
    assert result.stdout.splitlines() == ["worker ai@host is down: last heartbeat 10m ago"]
    assert result.stderr == ""
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["problems"] == result.stdout.splitlines()


def beat_silent(client: redis.Redis, now: float) -> None:
    BeatLiveness(client).tick(now - 300)


def beat_never_seen(client: redis.Redis, now: float) -> None:
    client.delete(keys.BEAT_TICK_KEY)


def worker_stopped(client: redis.Redis, now: float) -> None:
    WorkerRegistry(client).forget("all@host", now=now)


def ai_message_without_consumer(client: redis.Redis, now: float) -> None:
    WorkerRegistry(client).beat("all@host", queues=[c.EMAIL_QUEUE], pid=1, now=now)
    client.rpush(c.AI_QUEUE, "{}")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (beat_silent, "beat is down: last tick 5m ago (limit 120s)"),
        (beat_never_seen, "beat has never ticked against this Redis (is a beat running?)"),
        (worker_stopped, "no worker is up (no heartbeat within WORKER_DOWN_AFTER)"),
        (
            ai_message_without_consumer,
            f"queue {c.AI_QUEUE}: 1 message(s) waiting and no worker up consumes it",
        ),
    ],
    ids=["beat-silent", "beat-never-seen", "no-worker-up", "queue-without-consumer"],
)
def test_find_problems_names_each_kind_of_problem(
    redis_client: redis.Redis, change: Callable[[redis.Redis, float], None], problem: str
) -> None:
    now = time.time()
    healthy(redis_client, now)
    assert collect_status(redis_client, now=now)["problems"] == []

    change(redis_client, now)

    assert collect_status(redis_client, now=now)["problems"] == [problem]
