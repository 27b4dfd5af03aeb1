"""``celery ... workflow submit|status|watch|cancel|list`` against a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
import redis
import yaml

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.cli.terminal import EX_USAGE
from personal_assistant.workers.workflows import runtime
from personal_assistant.workers.workflows.runtime import workflow_status
from personal_assistant.workers.workflows.trigger_rules import Status
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess, worker_env
from tests.support.workflow_inputs import CLEANUP_OLD_LOGS, alias_bomb_workflow, cleanup_everything

pytestmark = pytest.mark.integration

Q = {"queue": c.MAINTENANCE_QUEUE}
# The list task a of the cancel test waits on until the test pushes to it.
GATE = "wf:gate:a"


def cli(redis_url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.support.celery_test_app", "workflow", *args],
        env=worker_env(redis_url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class _NoAliases(yaml.SafeDumper):
    """Writes a shared value out each time (workflow files may not hold aliases)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def write(path: Path, definition: dict[str, object]) -> Path:
    path.write_text(yaml.dump(definition, Dumper=_NoAliases))
    return path


def test_submit_then_watch_follows_a_workflow_to_its_end(
    redis_url: str,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], concurrency=2)
    file = write(
        tmp_path / "diamond.yaml",
        {
            "name": "diamond",
            "tasks": {
                "a": {"task": "tests.step", "kwargs": {"name": "a"}, "options": Q},
                "b": {
                    "task": "tests.step",
                    "kwargs": {"name": "b"},
                    "depends_on": ["a"],
                    "options": Q,
                },
                "c": {
                    "task": "tests.step",
                    "kwargs": {"name": "c"},
                    "depends_on": ["a"],
                    "options": Q,
                },
                "d": {
                    "task": "tests.step",
                    "kwargs": {"name": "d"},
                    "depends_on": ["b", "c"],
                    "options": Q,
                },
            },
        },
    )
    submitted = cli(redis_url, "submit", str(file))
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = submitted.stdout.strip()
    watched = cli(redis_url, "watch", workflow_id, "--timeout", "60")
    assert watched.returncode == 0, watched.stderr
    assert "4/4" in watched.stdout
    assert "completed" in watched.stdout
    status = cli(redis_url, "status", workflow_id, "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["state"] == "completed"
    assert set(data["tasks"]) == {"a", "b", "c", "d"}


def test_submitting_an_invalid_file_lists_every_problem_and_starts_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    file = write(
        tmp_path / "bad.yaml",
        {
            "tasks": {
                "a": {"task": "tests.step", "depends_on": ["b"]},
                "b": {"task": "tests.step", "depends_on": ["a"], "trigger_rule": "sometimes"},
                "c": {"task": "nope.missing"},
            }
        },
    )
    refused = cli(redis_url, "submit", str(file))
    assert refused.returncode == EX_USAGE
    assert "dependency cycle" in refused.stderr
    assert "unknown trigger rule 'sometimes'" in refused.stderr
    assert "unknown Celery task 'nope.missing'" in refused.stderr
    assert redis_client.keys("pa:wf:*") == []


def test_a_yaml_file_with_a_duplicate_task_id_is_refused_with_its_line(
    redis_url: str,
    tmp_path: Path,
) -> None:
    file = tmp_path / "dup.yaml"
    file.write_text("tasks:\n  a:\n    task: tests.step\n  a:\n    task: tests.step\n")
    refused = cli(redis_url, "submit", str(file))
    assert refused.returncode == EX_USAGE
    assert f"{file}: line 4: duplicate key 'a'" in refused.stderr


def test_submitting_dev_zero_ends_at_once_with_one_line_and_nothing_started(
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    refused = cli(redis_url, "submit", "/dev/zero", timeout=60)
    assert refused.returncode == EX_USAGE
    assert refused.stderr == "Error: invalid workflow: /dev/zero: not a regular file\n"
    assert redis_client.keys("pa:wf:*") == []


def test_submitting_a_file_of_nested_aliases_ends_at_once_with_one_line_and_nothing_started(
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    file = tmp_path / "bomb.yaml"
    file.write_text(alias_bomb_workflow())
    refused = cli(redis_url, "submit", str(file), timeout=60)
    assert refused.returncode == EX_USAGE
    assert refused.stderr == (
        f"Error: invalid workflow: {file}: line 6: aliases (*name) are not allowed: "
        "write the value out\n"
    )
    assert redis_client.keys("pa:wf:*") == []


def test_submitting_a_forbidden_task_names_it_and_starts_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    refused = cli(redis_url, "submit", str(write(tmp_path / "wipe.yaml", cleanup_everything())))
    assert refused.returncode == EX_USAGE
    assert refused.stderr == (
        f"Error: invalid workflow: wipe: task '{CLEANUP_OLD_LOGS}' may not run in a workflow: "
        "maintenance tasks never run in a workflow\n"
    )
    assert redis_client.keys("pa:wf:*") == []


def test_status_of_an_unknown_workflow_is_a_clear_error(redis_url: str) -> None:
    missing = cli(redis_url, "status", "0" * 32)
    assert missing.returncode == 1
    assert missing.stderr == f"Error: no workflow with id {'0' * 32}\n"


def test_cancel_stops_a_running_workflow_before_its_dependents_run(
    redis_url: str,
    redis_client: redis.Redis,
    producer_app: WorkerApp,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE])
    file = write(
        tmp_path / "long.yaml",
        {
            "tasks": {
                # Runs until the test opens its gate, so the cancel command (a new process,
                # slow to start on a busy machine) always lands while a runs.
                "a": {"task": "tests.step", "kwargs": {"name": "a", "gate": GATE}, "options": Q},
                "b": {
                    "task": "tests.step",
                    "kwargs": {"name": "b"},
                    "depends_on": ["a"],
                    "options": Q,
                },
            }
        },
    )
    workflow_id = cli(redis_url, "submit", str(file)).stdout.strip()
    wait_for(
        lambda: workflow_status(workflow_id, app=producer_app)["tasks"]["a"]["status"] == "running",
        timeout=30,
    )
    cancelled = cli(redis_url, "cancel", workflow_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled 2 task(s)" in cancelled.stdout
    status = workflow_status(workflow_id, app=producer_app)
    assert status["state"] == "cancelled"
    assert {t["status"] for t in status["tasks"].values()} == {"cancelled"}
    # a was already running (revoked without terminate, so it finishes); b must never run.
    redis_client.rpush(GATE, "open")
    producer_app.AsyncResult(status["tasks"]["a"]["celery_id"]).get(timeout=30)
    deadline = time.monotonic() + 2.0  # b would be pushed with a's end: watch for a while
    while time.monotonic() < deadline:
        assert cast(list[bytes], redis_client.lrange("wf:ran", 0, -1)) == [b"a"]
        time.sleep(0.1)
    assert workflow_status(workflow_id, app=producer_app)["tasks"]["b"]["status"] == "cancelled"


def test_list_finds_workflows_newest_first_by_state_and_creation_time(
    redis_url: str, redis_client: redis.Redis, producer_app: WorkerApp
) -> None:
    single = {"tasks": {"a": {"task": "tests.step", "options": Q}}}
    old = runtime.submit_workflow(single, app=producer_app)
    completed = runtime.submit_workflow(single, app=producer_app)
    runtime.record_task_event(producer_app, completed, "a", Status.COMPLETED)
    cancelled = runtime.submit_workflow(single, app=producer_app)
    runtime.cancel_workflow(cancelled, app=producer_app)
    time.sleep(0.01)
    between = time.time()
    time.sleep(0.01)
    running = runtime.submit_workflow(single, app=producer_app)
    # Two hours pass for the first one: its creation time, where the submit wrote it.
    two_hours_ago = between - 7200
    redis_client.hset(keys.workflow_meta_key(old), "created_at", json.dumps(two_hours_ago))
    redis_client.zadd(keys.WORKFLOWS_INDEX_KEY, {old: two_hours_ago})

    def listed(*args: str) -> list[str]:
        result = cli(redis_url, "list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["id"] for line in result.stdout.splitlines()]

    assert listed() == [running, cancelled, completed, old]
    assert listed("--state", "cancelled") == [cancelled]
    assert listed("--state", "running") == [running, old]
    assert listed("--since", "1h") == [running, cancelled, completed]
    since = datetime.fromtimestamp(between, UTC).isoformat()
    assert listed("--since", since) == [running]
    assert listed("--limit", "2") == [running, cancelled]
    table = cli(redis_url, "list", "--state", "completed", "--since", "30m")
    assert table.returncode == 0, table.stderr
    assert [line.split()[:3] for line in table.stdout.splitlines()[1:]] == [
        [completed, "workflow", "completed"]
    ]


def test_every_command_prints_its_documented_json_shape(redis_url: str, tmp_path: Path) -> None:
    file = write(tmp_path / "one.yaml", {"name": "one", "tasks": {"a": {"task": "tests.step"}}})
    submitted = cli(redis_url, "submit", "--json", str(file))
    assert submitted.returncode == 0, submitted.stderr
    created = json.loads(submitted.stdout)
    assert created == {"id": created["id"], "name": "one"}
    workflow_id = created["id"]

    status = json.loads(cli(redis_url, "status", "--json", workflow_id).stdout)
    assert set(status) == {"id", "name", "state", "created_at", "ended_at", "counts", "tasks"}
    assert set(status["tasks"]["a"]) == {
        *("status", "error", "result", "started_at", "ended_at"),
        *("duration", "task", "celery_id"),
    }
    cancelled = cli(redis_url, "cancel", "--json", workflow_id)
    assert json.loads(cancelled.stdout) == {"id": workflow_id, "cancelled": 1}
    watched = cli(redis_url, "watch", "--json", workflow_id)
    assert watched.returncode == 1  # cancelled
    assert json.loads(watched.stdout)["state"] == "cancelled"
    [listed] = [json.loads(line) for line in cli(redis_url, "list", "--json").stdout.splitlines()]
    assert set(listed) == {"id", "name", "state", "created_at", "ended_at", "tasks", "remaining"}
    assert (listed["id"], listed["state"], listed["tasks"]) == (workflow_id, "cancelled", 1)
    assert json.loads(cli(redis_url, "reindex", "--json").stdout) == {"added": 0}
