"""``celery ... workflow submit|status|watch|cancel`` against a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import redis
import yaml

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.workflows.runtime import workflow_status
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
    assert refused.returncode != 0
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
    assert refused.returncode != 0
    assert f"{file}: line 4: duplicate key 'a'" in refused.stderr


def test_submitting_dev_zero_ends_at_once_with_one_line_and_nothing_started(
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    refused = cli(redis_url, "submit", "/dev/zero", timeout=60)
    assert refused.returncode == 1
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
    assert refused.returncode == 1
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
    assert refused.returncode == 1
    assert refused.stderr == (
        f"Error: invalid workflow: wipe: task '{CLEANUP_OLD_LOGS}' may not run in a workflow: "
        "maintenance tasks never run in a workflow\n"
    )
    assert redis_client.keys("pa:wf:*") == []


def test_status_of_an_unknown_workflow_is_a_clear_error(redis_url: str) -> None:
    missing = cli(redis_url, "status", "0" * 32)
    assert missing.returncode != 0
    assert "no workflow with id" in missing.stderr


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
