"""``celery ... schedule list|add|remove|disable|enable|run-now`` on a real Redis.

Most tests run the command in this process (click's runner, on an app configured like
production and pointed at the test Redis); the real ``celery`` CLI runs where what is proved is
the process itself: the entry point, and one line and exit code 69 when Redis is stopped.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis
from click.testing import CliRunner, Result

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.cli.schedule_command import schedule
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.schedulers.beat_lock import BeatLock
from personal_assistant.workers.schedulers.enhanced_scheduler import EnhancedScheduler
from personal_assistant.workers.worker_app import WorkerApp
from personal_assistant.workers.workflows.runtime import workflow_status
from tests.support.beat import Clock, sent_runs, tick_until_idle
from tests.support.redis_server import RedisServer
from tests.support.worker import APP, worker_env

pytestmark = pytest.mark.integration

SEED_ENTRIES = {
    *("process-due-ai-tasks", "process-email-queue", "cleanup-temp-files"),
    *("sync-calendar-events", "cleanup-old-logs"),
}
# The shape `schedule list --json` documents for each entry (cli/schedule_command.py).
DOCUMENTED_ROW_KEYS = frozenset(
    {
        *("name", "state", "source", "target", "schedule", "queue", "last_run", "next_run"),
        *("run_count", "skips", "last_skip", "problem"),
    }
)
CLEANUP_OLD_LOGS = f"{c.TASKS_PACKAGE}.maintenance_tasks.cleanup_old_logs"
QUEUE = c.MAINTENANCE_QUEUE
SWEEP = f"{c.TASKS_PACKAGE}.maintenance_tasks.sweep_workflow_timeouts"
CLEANUP_TEMP_FILES = f"{c.TASKS_PACKAGE}.file_tasks.cleanup_temp_files"


def run(app: WorkerApp, *args: str, columns: int = 250) -> Result:
    """``schedule ARGS`` in this process, on ``app``, in a terminal ``columns`` wide."""
    runner = CliRunner(env={"COLUMNS": str(columns)})
    return runner.invoke(schedule, list(args), obj=SimpleNamespace(app=app))


def listing(app: WorkerApp) -> dict[str, Any]:
    """``schedule list --json``, parsed."""
    result = run(app, "list", "--json")
    assert result.exit_code == 0, result.output
    return cast("dict[str, Any]", json.loads(result.stdout))


def entries(app: WorkerApp) -> dict[str, dict[str, Any]]:
    """The listed entries by name."""
    return {entry["name"]: entry for entry in listing(app)["entries"]}


def one_error_line(result: Result, exit_code: int) -> str:
    """The single ``Error:`` line a failed command printed, its exit code checked."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_list_shows_the_declared_entries_and_no_lock_holder(producer_app: WorkerApp) -> None:
    result = run(producer_app, "list")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "no beat holds the lock"
    for name in SEED_ENTRIES:
        row = [line for line in lines if f" {name} " in line]
        assert len(row) == 1, result.stdout
        assert "declared" in row[0] and "enabled" in row[0]
    assert "maintenance_tasks.cleanup_old_logs" in result.stdout
    assert "cron '0 3 * * *' in UTC" in result.stdout


def test_list_fits_a_narrow_terminal_and_keeps_the_names_whole(producer_app: WorkerApp) -> None:
    result = run(producer_app, "list", columns=80)

    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    for name in SEED_ENTRIES:
        assert f" {name} " in result.stdout


def test_list_json_is_the_lock_holder_and_one_row_per_entry(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    lock = BeatLock(redis_client, owner="beat-host:4242:0a1b2c3d", timeout=30.0)
    assert lock.acquire()

    data = listing(producer_app)

    assert set(data) == {"lock_holder", "entries"}
    assert data["lock_holder"] == "beat-host:4242:0a1b2c3d"
    by_name = {entry["name"]: entry for entry in data["entries"]}
    assert set(by_name) >= SEED_ENTRIES
    assert {frozenset(entry) for entry in data["entries"]} == {DOCUMENTED_ROW_KEYS}
    row = by_name["cleanup-old-logs"]
    assert (row["state"], row["source"], row["target"]) == ("enabled", "declared", CLEANUP_OLD_LOGS)
    assert (row["schedule"], row["queue"]) == ("cron '0 3 * * *' in UTC", None)
    assert (row["run_count"], row["skips"], row["problem"]) == (0, {}, None)
    assert "lock held by beat-host:4242:0a1b2c3d" in run(producer_app, "list").stdout


def test_an_added_entry_is_stored_with_every_option_and_listed_as_added_and_enabled(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    options = (
        f"--task {CLEANUP_OLD_LOGS} --cron '30 4 * * mon-fri' --timezone Europe/Berlin"
        f" --queue {c.MAINTENANCE_QUEUE} --priority 2 --kwargs '{{\"max_age_days\": 30}}'"
        " --expires 600 --jitter 60 --window 'mon-fri 04:00-06:00 Europe/Berlin' --no-overlap"
        " --max-queue-depth 100 --misfire skip --misfire-grace 120"
    )

    added = run(producer_app, "add", "nightly-logs", *shlex.split(options))

    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("added beat entry 'nightly-logs' (enabled)")
    stored = json.loads(redis_client.hget(keys.BEAT_DEFS_KEY, "nightly-logs") or "null")
    assert stored == {
        "task": CLEANUP_OLD_LOGS,
        "cron": "30 4 * * mon-fri",
        "timezone": "Europe/Berlin",
        "queue": c.MAINTENANCE_QUEUE,
        "priority": 2,
        "kwargs": {"max_age_days": 30},
        "expires": 600.0,
        "jitter": 60.0,
        "window": "mon-fri 04:00-06:00 Europe/Berlin",
        "no_overlap": True,
        "max_queue_depth": 100,
        "misfire": "skip",
        "misfire_grace": 120.0,
        "enabled": True,
    }
    listed = entries(producer_app)["nightly-logs"]
    assert [listed[key] for key in ("state", "source", "queue")] == ["enabled", "added", QUEUE]
    assert listed["schedule"] == "cron '30 4 * * mon-fri' in Europe/Berlin"


def test_adding_a_name_again_is_refused_unless_replace_is_given(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    first = run(producer_app, "add", "sweep", "--task", SWEEP, "--every", "60")
    again = run(producer_app, "add", "sweep", "--task", SWEEP, "--every", "30")
    replaced = run(producer_app, "add", "sweep", "--task", SWEEP, "--every", "30", "--replace")

    assert first.exit_code == 0, first.output
    assert "use --replace" in one_error_line(again, 64)
    assert replaced.exit_code == 0 and replaced.stdout.startswith("replaced beat entry 'sweep'")
    assert entries(producer_app)["sweep"]["schedule"] == "every 30 s"


WORKFLOW_FILE = f"""name: tidy
tasks:
  files:
    task: {CLEANUP_TEMP_FILES}
"""


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(f"--task {SWEEP} --cron '61 * * * *'", "minute 61 is outside", id="cron"),
        pytest.param(
            f"--task {SWEEP[:-1]} --every 60",
            f"unknown task {SWEEP[:-1]!r} (did you mean {SWEEP!r}?)",
            id="unknown-task",
        ),
        pytest.param(f"--task {SWEEP} --every 60 --queue nope", "unknown queue 'nope'", id="queue"),
        pytest.param(
            f"--task {SWEEP} --cron '0 3 * * *' --window 'mon-fri 09:00-17:00'",
            "never opens for cron '0 3 * * *'",
            id="window-never-opens",
        ),
        pytest.param(
            f"--task {SWEEP} --workflow GOOD --every 60", "give --task or --workflow", id="both"
        ),
        pytest.param(f"--task {SWEEP}", "give exactly one of --cron", id="no-schedule"),
        pytest.param(f"--task {SWEEP} --every 60 --args '{{}}'", "JSON list", id="args"),
        pytest.param("--workflow BAD --every 60", "unknown Celery task 'nope.x'", id="workflow"),
    ],
)
def test_add_refuses_bad_input_with_one_line_naming_the_entry_and_stores_nothing(
    producer_app: WorkerApp, redis_client: redis.Redis, tmp_path: Path, options: str, expected: str
) -> None:
    (tmp_path / "GOOD").write_text(WORKFLOW_FILE)
    (tmp_path / "BAD").write_text(WORKFLOW_FILE.replace(CLEANUP_TEMP_FILES, "nope.x"))
    paths = {"GOOD": str(tmp_path / "GOOD"), "BAD": str(tmp_path / "BAD")}

    result = run(producer_app, "add", "mine", *[paths.get(a, a) for a in shlex.split(options)])

    line = one_error_line(result, 64)
    assert line.startswith("Error: beat entry 'mine': ")
    assert expected in line
    assert redis_client.exists(keys.BEAT_DEFS_KEY, keys.BEAT_VERSION_KEY) == 0


def test_an_option_click_refuses_is_one_line_naming_the_entry_and_clicks_exit_code_2(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    result = run(producer_app, "add", "mine", "--task", SWEEP, "--every", "60", "--priority", "11")

    line = one_error_line(result, 2)
    assert line.startswith("Error: beat entry 'mine': Invalid value for '--priority'")
    assert line.endswith("(see 'schedule add --help')")
    assert redis_client.exists(keys.BEAT_DEFS_KEY, keys.BEAT_VERSION_KEY) == 0


def test_a_name_declared_in_code_cannot_be_added_or_removed(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    added = run(producer_app, "add", "cleanup-old-logs", "--task", SWEEP, "--every", "60")
    removed = run(producer_app, "remove", "cleanup-old-logs")

    assert "declared in code" in one_error_line(added, 64)
    assert "declared in code" in one_error_line(removed, 64)
    assert redis_client.exists(keys.BEAT_DEFS_KEY, keys.BEAT_VERSION_KEY) == 0
    assert entries(producer_app)["cleanup-old-logs"]["state"] == "enabled"


def test_disable_and_enable_flip_the_state_of_a_declared_and_of_an_added_entry(
    producer_app: WorkerApp,
) -> None:
    added = run(producer_app, "add", "later", "--task", SWEEP, "--every", "60", "--disabled")
    assert added.exit_code == 0 and "(disabled)" in added.stdout
    assert entries(producer_app)["later"]["state"] == "disabled"

    for name in ("cleanup-old-logs", "later"):
        for command, state in (("disable", "disabled"), ("enable", "enabled")):
            result = run(producer_app, command, name)
            assert result.exit_code == 0 and f"beat entry {name!r}" in result.stdout
            assert entries(producer_app)[name]["state"] == state, (name, command)


def test_an_unknown_name_is_exit_code_1_with_the_closest_known_name(
    producer_app: WorkerApp,
) -> None:
    for command in ("disable", "enable", "remove", "run-now"):
        line = one_error_line(run(producer_app, command, "cleanup-old-log"), 1)
        assert line == "Error: no entry named 'cleanup-old-log' (did you mean 'cleanup-old-logs'?)"
    assert one_error_line(run(producer_app, "disable", "zzz"), 1) == "Error: no entry named 'zzz'"


def test_remove_forgets_an_added_entry(producer_app: WorkerApp) -> None:
    assert run(producer_app, "add", "sweep", "--task", SWEEP, "--every", "60").exit_code == 0

    removed = run(producer_app, "remove", "sweep")

    assert removed.exit_code == 0 and removed.stdout == "removed beat entry 'sweep'\n"
    assert "sweep" not in entries(producer_app)
    again = run(producer_app, "remove", "sweep")
    assert one_error_line(again, 1).startswith("Error: no entry named 'sweep'")


def test_run_now_publishes_one_run_to_the_entrys_queue_with_the_printed_id(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    before = queue_depths(redis_client, [c.MAINTENANCE_QUEUE])[c.MAINTENANCE_QUEUE]

    result = run(producer_app, "run-now", "cleanup-old-logs")

    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    assert str(uuid.UUID(run_id)) == run_id
    assert queue_depths(redis_client, [c.MAINTENANCE_QUEUE])[c.MAINTENANCE_QUEUE] == before + 1
    [sent] = sent_runs(redis_client, c.MAINTENANCE_QUEUE)
    assert (sent.task_id, sent.task, sent.entry) == (run_id, CLEANUP_OLD_LOGS, "cleanup-old-logs")
    assert listing(producer_app)["lock_holder"] is None  # no beat was involved
    # Recorded as the entry's latest run, for no_overlap; its schedule's count is unchanged.
    state: dict[bytes, bytes] = redis_client.hgetall("pa:beat:entry:cleanup-old-logs")  # type: ignore[assignment]
    assert state[b"last_task_id"].decode() == run_id
    assert state[b"manual_runs"] == b"1"
    assert b"run_count" not in state


def test_a_workflow_entry_is_added_from_a_file_and_run_now_submits_it(
    producer_app: WorkerApp, redis_client: redis.Redis, tmp_path: Path
) -> None:
    definition = tmp_path / "tidy.yaml"
    definition.write_text(WORKFLOW_FILE)
    added = run(producer_app, "add", "hourly", "--workflow", str(definition), "--every", "3600")

    result = run(producer_app, "run-now", "hourly")

    assert added.exit_code == 0, added.output
    assert entries(producer_app)["hourly"]["target"] == "workflow tidy"
    assert result.exit_code == 0, result.output
    workflow_id = result.stdout.strip()
    assert uuid.UUID(hex=workflow_id).hex == workflow_id
    status = workflow_status(workflow_id, app=producer_app)
    assert (status["name"], set(status["tasks"])) == ("tidy", {"files"})
    assert queue_depths(redis_client, [c.FILE_QUEUE])[c.FILE_QUEUE] == 1


def test_an_entry_stored_broken_is_listed_invalid_and_cannot_run_now(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    # What a stored entry becomes when a release renames its task: still there, not runnable.
    redis_client.hset(
        keys.BEAT_DEFS_KEY, "renamed", json.dumps({"task": "gone.task", "interval": 60.0})
    )

    listed = entries(producer_app)["renamed"]
    table = run(producer_app, "list", columns=100).stdout
    refused = run(producer_app, "run-now", "renamed")

    assert (listed["state"], listed["source"]) == ("invalid", "added")
    assert "unknown task 'gone.task'" in listed["problem"]
    assert "invalid: beat entry 'renamed': unknown task 'gone.task'" in " ".join(table.split())
    assert "unknown task 'gone.task'" in one_error_line(refused, 1)
    assert queue_depths(redis_client, list(c.QUEUES)) == dict.fromkeys(c.QUEUES, 0)


def test_list_shows_a_running_beats_lock_runs_and_skips_by_reason(
    producer_app: WorkerApp, redis_client: redis.Redis
) -> None:
    now = time.time()
    opens = datetime.fromtimestamp(now, UTC) + timedelta(hours=2)  # closed for hours yet
    windowed = f"* {opens:%H:%M}-{opens + timedelta(hours=1):%H:%M}"
    for name, extra in (("often", []), ("shut", ["--window", windowed])):
        added = run(producer_app, "add", name, "--task", SWEEP, "--every", "2", *extra)
        assert added.exit_code == 0, added.output
    clock = Clock(now)
    beat = EnhancedScheduler(app=producer_app, lock_timeout=30.0)
    beat.clock = clock
    try:
        tick_until_idle(beat)
        for _ in range(5):
            clock.advance(1.0)
            tick_until_idle(beat)
        data = listing(producer_app)
    finally:
        beat.close()

    by_name = {entry["name"]: entry for entry in data["entries"]}
    assert data["lock_holder"] == beat.owner
    often, shut = by_name["often"], by_name["shut"]
    assert often["run_count"] == 2 and often["last_run"] == pytest.approx(now + 4.0)
    assert often["next_run"] == pytest.approx(now + 6.0)
    assert shut["run_count"] == 0 and shut["skips"] == {"window": 2}
    assert shut["last_skip"] == "window"
    table = run(producer_app, "list").stdout
    assert [line for line in table.splitlines() if " shut " in line and "window 2" in line]


def cli(url: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """The real ``celery -A ... schedule ARGS``, started (not waited for)."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", APP, "schedule", *args],
        env=worker_env(url),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_celery_command_finds_schedule_through_its_entry_point(
    redis_url: str, tmp_path: Path
) -> None:
    process = cli(redis_url, tmp_path, "list", "--json")
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    assert {entry["name"] for entry in json.loads(out)["entries"]} >= SEED_ENTRIES


def test_every_subcommand_is_one_masked_line_and_exit_code_69_when_redis_is_stopped(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    server.stop()
    url = f"redis://:very-secret@127.0.0.1:{server.port}/0"
    commands = [
        ["list"],
        ["add", "sweep", "--task", SWEEP, "--every", "60"],
        ["remove", "sweep"],
        ["disable", "cleanup-old-logs"],
        ["enable", "cleanup-old-logs"],
        ["run-now", "cleanup-old-logs"],
    ]
    # Side by side: each waits out the client's retries; one after another would take 25 s.
    processes = [cli(url, tmp_path, *command) for command in commands]
    outputs = [process.communicate(timeout=90) for process in processes]

    expected = f"Error: cannot reach Redis at redis://:****@127.0.0.1:{server.port}/0: "
    for command, process, (out, err) in zip(commands, processes, outputs, strict=True):
        assert process.returncode == 69, (command, out, err)
        assert len(err.splitlines()) == 1 and err.startswith(expected), (command, err)
        assert "very-secret" not in out + err
