"""``celery ... workflow`` as an operator meets it: on an 80-column terminal, with Redis up and
with Redis stopped.

Every command runs on a real pseudo-terminal (tests/support/terminal.py), so rich, click and
the progress line see the terminal's width and ``isatty`` as they do for a person.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import yaml

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.cli.terminal import EX_UNAVAILABLE, EX_USAGE
from personal_assistant.workers.workflows import runtime
from personal_assistant.workers.workflows.trigger_rules import Status
from tests.support.redis_server import free_port
from tests.support.terminal import TerminalRun, run_in_terminal
from tests.support.worker import WorkerProcess, worker_env

pytestmark = pytest.mark.integration

COLUMNS = 80
Q = {"queue": c.MAINTENANCE_QUEUE}
WORKFLOW_ID = re.compile(r"^[0-9a-f]{32}$")
# The progress line: "<name>: <state> <final>/<total> (<counts>)[  <seconds>s]".
PROGRESS = re.compile(r"^\S+: \w+ \d+/\d+ \(")


def workflow_cli(redis_url: str, *args: str) -> TerminalRun:
    """``celery ... workflow ARGS`` on an 80-column terminal."""
    command = [sys.executable, "-m", "celery", "-A", "tests.support.celery_test_app", "workflow"]
    return run_in_terminal([*command, *args], worker_env(redis_url), columns=COLUMNS)


def write(path: Path, definition: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(definition))
    return path


def steps(count: int, seconds: float = 0.0) -> dict[str, object]:
    """A chain of ``count`` steps, each waiting for the one before."""
    tasks: dict[str, object] = {}
    for i in range(count):
        spec: dict[str, object] = {
            "task": "tests.step",
            "kwargs": {"name": f"s{i}", "seconds": seconds},
            "options": dict(Q),  # a copy each: a shared dict would be dumped as a YAML alias
        }
        if i:
            spec["depends_on"] = [f"s{i - 1}"]
        tasks[f"s{i}"] = spec
    return {"name": "chain", "tasks": tasks}


# --- Redis stopped ----------------------------------------------------------------------------

SOME_ID = "0123456789abcdef0123456789abcdef"
COMMANDS_NEEDING_REDIS = [
    ("submit", "{file}"),
    ("submit", "--watch", "{file}"),
    ("submit", "--json", "{file}"),
    ("status", SOME_ID),
    ("status", "--json", SOME_ID),
    ("watch", SOME_ID),
    ("cancel", SOME_ID),
    ("list",),
    ("list", "--state", "failed", "--since", "1h", "--json"),
    ("reindex",),
]


@pytest.mark.parametrize("args", COMMANDS_NEEDING_REDIS, ids=lambda a: " ".join(a[:-1] or a))
def test_with_redis_stopped_every_command_prints_one_line_and_exits_69(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    stopped = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    file = write(tmp_path / "wf.yaml", steps(1))

    run = workflow_cli(stopped, *(a.format(file=file) for a in args))

    assert run.exit_code == EX_UNAVAILABLE, run.output
    assert run.lines() == [f"Error: cannot reach Redis at {stopped}: Connection refused"]
    assert run.widest() <= COLUMNS


# --- Redis up: widths and messages --------------------------------------------------------------


def test_submit_watch_prints_the_id_alone_then_one_progress_line_that_fits(
    redis_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker([c.MAINTENANCE_QUEUE])
    file = write(tmp_path / "chain.yaml", steps(4, seconds=0.4))

    run = workflow_cli(redis_url, "submit", "--watch", str(file))

    assert run.exit_code == 0, run.output
    lines = run.lines()
    assert WORKFLOW_ID.match(lines[0]), run.output  # the whole id, on a line of its own
    progress = [line for line in lines if PROGRESS.match(line)]
    assert progress == ["chain: completed 4/4 (4 completed)"], run.output
    assert run.output.count("\r\x1b[2K") > 1  # it was updated in place, more than once
    assert run.widest() <= COLUMNS, run.output
    assert sum(lines[0] in line for line in lines) == 2  # the id again, whole, in the table title


def test_status_of_a_workflow_with_long_errors_and_ids_fits_80_columns(
    redis_url: str, producer_app: WorkerApp
) -> None:
    long_id = "a-task-with-a-rather-long-identifier-" + "x" * 40
    workflow_id = runtime.submit_workflow(
        {"name": "wide", "tasks": {long_id: {"task": "tests.step", "options": Q}}},
        app=producer_app,
    )
    error = "RuntimeError: " + "the upstream service said no, at length; " * 20
    runtime.record_task_event(producer_app, workflow_id, long_id, Status.FAILED, error=error)

    run = workflow_cli(redis_url, "status", workflow_id)

    assert run.exit_code == 0, run.output
    assert run.widest() <= COLUMNS, run.output
    assert any("failed" in line for line in run.lines())
    assert workflow_id in run.output  # the id is never cut


def test_list_fits_80_columns_and_shows_whole_ids(redis_url: str, producer_app: WorkerApp) -> None:
    name = "a-workflow-name-much-longer-than-the-column-it-gets-on-a-narrow-terminal"
    submitted = [
        runtime.submit_workflow(
            {"name": name, "tasks": {"a": {"task": "tests.step", "options": Q}}}, app=producer_app
        )
        for _ in range(3)
    ]

    run = workflow_cli(redis_url, "list")

    assert run.exit_code == 0, run.output
    assert run.widest() <= COLUMNS, run.output
    shown = [line.split()[0] for line in run.lines()[1:]]
    assert shown == submitted[::-1]  # newest first, each id whole


def test_a_yaml_error_is_one_line_naming_the_file_line_and_column(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    file = tmp_path / "nightly.yaml"
    file.write_bytes(b"name: nightly\ntasks:\n  a: {task: tests.step\n  b: \x07\n")

    run = workflow_cli(redis_url, "submit", str(file))

    assert run.exit_code == EX_USAGE, run.output
    assert run.lines() == [
        f"Error: invalid workflow: {file}: line 4, column 6: character #x0007: "
        "control characters are not allowed"
    ]
    assert redis_client.keys("pa:wf:*") == []


def test_a_misspelt_task_is_offered_the_allowed_name_in_the_one_line_problem_list(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    file = write(
        tmp_path / "typo.yaml",
        {
            "tasks": {
                "a": {"task": "tests.stepp"},
                "b": {"task": "tests.step", "depends_on": ["nope"]},
            }
        },
    )

    run = workflow_cli(redis_url, "submit", str(file))

    assert run.exit_code == EX_USAGE, run.output
    assert run.lines() == [
        "Error: invalid workflow:",
        "  - a: unknown Celery task 'tests.stepp'; did you mean 'tests.step'?",
        "  - b: depends on unknown task 'nope'",
    ]
    assert redis_client.keys("pa:wf:*") == []


@pytest.mark.parametrize(
    "args",
    [("list", "--state", "finished"), ("status",), ("lsit",), ("watch", "x", "--interval", "0")],
    ids=["unknown-state", "missing-id", "unknown-command", "interval-out-of-range"],
)
def test_a_command_line_click_refuses_is_one_line_without_the_usage_and_exit_2(
    args: tuple[str, ...],
) -> None:
    run = workflow_cli(f"redis://127.0.0.1:{free_port()}/0", *args)

    assert run.exit_code == 2, run.output
    assert len(run.lines()) == 1, run.output
    assert run.lines()[0].startswith("Error: "), run.output
    assert "Traceback" not in run.output and "Usage:" not in run.output
