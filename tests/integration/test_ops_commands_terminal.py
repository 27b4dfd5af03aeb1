"""The ops commands as an operator meets them: on a real 80-column terminal (a pseudo-terminal),
with Redis stopped, then with Redis up and holding what a running system leaves.

Redis stopped: every command that reads Redis prints one line naming what failed (the URL's
password masked), fits the terminal, and exits with 69 as Celery's commands do (the store
unreachable is 69 too for ``db``). Redis up: every table fits 80 columns.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.evaluator import HISTORY_KEY
from personal_assistant.workers.dead_letters.queue import DeadLetter, DeadLetterQueue
from personal_assistant.workers.metrics.snapshots import write_snapshot
from personal_assistant.workers.monitoring.liveness import BeatLiveness, WorkerRegistry
from tests.support.redis_server import RedisServer
from tests.support.terminal import TerminalRun, run_in_terminal
from tests.support.worker import APP, worker_env

pytestmark = pytest.mark.integration

COLUMNS = 80
SECRET = "very-secret-17"  # noqa: S105 - a test password, to see that it is masked
SEND_EMAIL = f"{c.TASKS_PACKAGE}.email_tasks.send_email"
# Every ops command that reads the broker's Redis (each sub-command of each group).
REDIS_COMMANDS: list[list[str]] = [
    ["pa-status"],
    ["pa-status", "--check"],
    ["pa-status", "--json"],
    ["dlq", "list"],
    ["dlq", "list", "--json"],
    ["dlq", "show", "0123abcd"],
    ["dlq", "replay", "0123abcd"],
    ["dlq", "purge", "0123abcd"],
    ["dlq", "purge", "--all", "--yes"],
    ["alerts", "list"],
    ["schedule", "list"],
    ["schedule", "run-now", "cleanup-old-logs"],
    ["schedule", "disable", "cleanup-old-logs"],
    ["tune"],
    ["tune", "--json"],
]
# Commands that print tables, run with Redis up.
TABLE_COMMANDS: list[list[str]] = [
    ["pa-status"],
    ["dlq", "list"],
    ["alerts", "list"],
    ["alerts", "rules"],
    ["schedule", "list"],
    ["tune"],
]


def celery(*args: str) -> list[str]:
    """The command line of ``celery -A <app> ARGS``."""
    return [sys.executable, "-m", "celery", "-A", APP, *args]


def run_all(commands: Sequence[Sequence[str]], env: dict[str, str]) -> list[TerminalRun]:
    """Each command on a terminal of its own, side by side: with Redis stopped each waits out
    the client's retries (a few seconds), which one after another would add up."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run_in_terminal(celery(*args), env), commands))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The commands run in ``tmp_path`` (their DATA_DIR is there), not in the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def stopped_redis_url(tmp_path: Path) -> str:
    """The URL of a Redis that ran and stopped, with a password (to be masked)."""
    server = RedisServer(tmp_path / "redis").start()
    server.stop()
    return f"redis://:{SECRET}@127.0.0.1:{server.port}/0"


@pytest.fixture
def running_system(redis_client: redis.Redis) -> Iterator[None]:
    """Heartbeats, beat's tick, metric snapshots, dead letters and sent alerts, as a running
    system leaves them in Redis; long names, so the tables have something to fit."""
    now = time.time()
    registry = WorkerRegistry(redis_client)
    registry.beat(
        "celery@worker-with-a-rather-long-hostname.internal.example.org",
        queues=list(c.QUEUES),
        pid=4242,
        now=now - 1,
    )
    registry.beat("ai@host", queues=[c.AI_QUEUE], pid=7, now=now - 600)
    BeatLiveness(redis_client).tick(now - 2)
    stats = {"failed": 1, "p95": 0.25, "avg_time": 0.2}
    write_snapshot(redis_client, "a@host", {SEND_EMAIL: {"count": 100, **stats}}, now - 11)
    write_snapshot(redis_client, "a@host", {SEND_EMAIL: {"count": 150, **stats}}, now - 1)
    for n in range(3):
        DeadLetterQueue(redis_client).add(
            DeadLetter(
                task_name=SEND_EMAIL,
                task_id=f"task-{n}",
                args=[n, "someone-with-a-long-address@example.org"],
                kwargs={"subject": "A subject line long enough to be cut " * 3},
                exception_type="PermanentError",
                exception="the mailbox does not exist; " * 10,
                traceback="Traceback (most recent call last):\n  File 'x.py'\nPermanentError",
                queue=c.EMAIL_QUEUE,
            )
        )
    for state in ("firing", "resolved"):
        alert = {
            "rule": "task_failures",
            "state": state,
            "severity": "critical",
            "channels": ["log", "webhook", "email"],
            "message": f"5 failures of {SEND_EMAIL} in 1m: " + "PermanentError: no. " * 20,
            "timestamp": now,
        }
        redis_client.lpush(HISTORY_KEY, json.dumps(alert))
    yield


def test_every_command_that_reads_redis_is_one_masked_line_and_69_when_redis_is_stopped(
    stopped_redis_url: str, in_tmp: Path
) -> None:
    runs = run_all(REDIS_COMMANDS, worker_env(stopped_redis_url))

    masked = stopped_redis_url.replace(SECRET, "****")
    for command, run in zip(REDIS_COMMANDS, runs, strict=True):
        lines = run.lines()
        assert run.exit_code == 69, (command, run.output)
        assert len(lines) == 1, (command, run.output)
        assert lines[0].startswith(f"Error: cannot reach Redis at {masked}: "), (command, lines)
        assert run.widest() <= COLUMNS, (command, lines)
        assert SECRET not in run.output


def test_db_is_one_masked_line_and_69_when_the_store_is_unreachable(
    stopped_redis_url: str, in_tmp: Path
) -> None:
    store = f"postgresql://app:{SECRET}@127.0.0.1:1/x"
    env = worker_env(stopped_redis_url, {"DATABASE_URL": store})

    runs = run_all([["db", "current"], ["db", "upgrade"], ["db", "current", "--json"]], env)

    for run in runs:
        lines = run.lines()
        assert run.exit_code == 69, run.output
        assert lines == [
            "Error: store postgresql://app:****@127.0.0.1:1/x unavailable: Connection refused"
        ], lines
        assert run.widest() <= COLUMNS
        assert SECRET not in run.output


def test_the_commands_that_need_no_redis_work_with_redis_stopped(
    stopped_redis_url: str, in_tmp: Path
) -> None:
    env = worker_env(stopped_redis_url)
    rules, sent, store = run_all(
        [["alerts", "rules"], ["alerts", "test", "task_failures"], ["db", "upgrade", "--json"]],
        env,
    )

    assert rules.exit_code == 0, rules.output
    assert rules.widest() <= COLUMNS, rules.lines()
    assert sent.exit_code == 0, sent.output
    assert "log: sent" in sent.lines()
    assert store.exit_code == 0, store.output
    assert json.loads(store.lines()[-1])["after"]


def test_every_table_fits_80_columns_with_redis_up(
    redis_url: str, running_system: None, in_tmp: Path
) -> None:
    runs = run_all(TABLE_COMMANDS, worker_env(redis_url))

    for command, run in zip(TABLE_COMMANDS, runs, strict=True):
        assert run.exit_code == 0, (command, run.output)
        assert run.widest() <= COLUMNS, (command, "\n".join(run.lines()))
        assert "Traceback" not in run.output
    status, dlq, alerts, _, schedule, tune = (run.lines() for run in runs)
    # What an operator copies from the tables is whole on one line: ids, names, queues.
    letter_ids = [letter.id for letter in DeadLetterQueue.from_url(redis_url).list()]
    for letter_id in letter_ids:
        assert any(letter_id in line for line in dlq), dlq
        assert any(letter_id in line for line in status), status
    assert any("maintenance_tasks" in line for line in status), status
    assert any("problem: worker ai@host is down" in line for line in status), status
    assert any(" task_failures " in line for line in alerts), alerts
    assert any(" firing, critical " in line for line in alerts), alerts
    assert any(" cleanup-old-logs " in line for line in schedule), schedule
    assert any("email_tasks: " in line for line in tune), tune
