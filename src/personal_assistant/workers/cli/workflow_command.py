"""``celery -A personal_assistant.workers.celery_app workflow submit|status|watch|cancel``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from personal_assistant.workers.workflows.definition import (
    WorkflowValidationError,
    load_definition_file,
)
from personal_assistant.workers.workflows.runtime import (
    WorkflowNotFound,
    cancel_workflow,
    submit_workflow,
    workflow_status,
)
from personal_assistant.workers.workflows.trigger_rules import TERMINAL

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "queued": "blue",
    "pending": "white",
    "failed": "red",
    "upstream_failed": "red",
    "timed_out": "magenta",
    "skipped": "yellow",
    "cancelled": "yellow",
}
EXIT_BY_STATE = {"completed": 0, "running": 0, "failed": 1, "cancelled": 1}


def _app(ctx: click.Context) -> WorkerApp:
    """The app ``celery -A`` named (this project's WorkerApp)."""
    app: WorkerApp = ctx.obj.app
    return app


def _status(ctx: click.Context, workflow_id: str) -> dict[str, Any]:
    try:
        return workflow_status(workflow_id, app=_app(ctx))
    except WorkflowNotFound:
        raise click.ClickException(f"no workflow with id {workflow_id}") from None


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _task_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"workflow {status['name']} ({status['id']}): {status['state']}")
    for column in ("task", "status", "started", "ended", "duration", "error"):
        table.add_column(column, overflow="fold")
    for tid, info in status["tasks"].items():
        style = STATUS_STYLE.get(info["status"], "white")
        duration = "-" if info["duration"] is None else f"{info['duration']:.2f}s"
        table.add_row(
            tid,
            f"[{style}]{info['status']}[/]",
            _when(info["started_at"]),
            _when(info["ended_at"]),
            duration,
            (info["error"] or "")[:80],
        )
    return table


@click.group(name="workflow")
def workflow() -> None:
    """DAG workflows: submit a definition (YAML/JSON), follow it, cancel it."""


@workflow.command(name="submit")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--watch", "then_watch", is_flag=True, help="Follow it until it ends.")
@click.pass_context
def submit(ctx: click.Context, path: str, then_watch: bool) -> None:
    """Validate and start the workflow in PATH; print its id.

    PATH is a YAML or JSON file of at most 1 MiB, without aliases (*name); its tasks must
    be on the workflow allow-list (the ai, email, file and sync tasks, and
    WORKFLOW_ALLOWED_TASKS). A file that cannot run is refused whole, one line per problem.
    """
    try:
        workflow_id = submit_workflow(load_definition_file(path), app=_app(ctx))
    except WorkflowValidationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(workflow_id)
    if then_watch:
        ctx.invoke(watch, workflow_id=workflow_id)


@workflow.command(name="status")
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, workflow_id: str, as_json: bool) -> None:
    """Print the workflow's state and each task's status, times and error."""
    info = _status(ctx, workflow_id)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=repr))
        return
    Console(width=160).print(_task_table(info))


@workflow.command(name="watch")
@click.argument("workflow_id")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(0.05, 60))
@click.option(
    "--timeout", default=0.0, type=click.FloatRange(0), help="Give up after (s); 0: never."
)
@click.pass_context
def watch(ctx: click.Context, workflow_id: str, interval: float, timeout: float) -> None:
    """Follow the workflow live (progress bar and task table) until it ends."""
    info = _status(ctx, workflow_id)
    total = len(info["tasks"])
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    bar = progress.add_task(info["name"], total=total)
    started = time.monotonic()
    with Live(
        Group(progress, _task_table(info)), refresh_per_second=4, console=Console(width=160)
    ) as live:
        while True:
            finished = sum(t["status"] in TERMINAL for t in info["tasks"].values())
            progress.update(bar, completed=finished)
            live.update(Group(progress, _task_table(info)))
            if info["state"] != "running":
                break
            if timeout and time.monotonic() - started > timeout:
                raise click.ClickException(f"workflow still running after {timeout:g}s")
            time.sleep(interval)
            info = _status(ctx, workflow_id)
    ctx.exit(EXIT_BY_STATE.get(str(info["state"]), 1))


@workflow.command(name="cancel")
@click.argument("workflow_id")
@click.option("--terminate", is_flag=True, help="Also kill tasks already running.")
@click.pass_context
def cancel(ctx: click.Context, workflow_id: str, terminate: bool) -> None:
    """Cancel every unfinished task of the workflow."""
    try:
        count = cancel_workflow(workflow_id, app=_app(ctx), terminate=terminate)
    except WorkflowNotFound:
        raise click.ClickException(f"no workflow with id {workflow_id}") from None
    click.echo(f"cancelled {count} task(s) of workflow {workflow_id}")
