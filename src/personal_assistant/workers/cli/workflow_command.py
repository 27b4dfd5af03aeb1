"""``celery -A personal_assistant.workers.celery_app workflow submit|status|watch|cancel|list``.

Errors are one line each on stderr (``Error: ...``), as for every ops command (the group is an
``OpsGroup``, cli/schedule_options.py); a definition that cannot run lists every problem, one
line each. Exit codes, as Celery's: 0 done (``watch``: the workflow completed); 1 the workflow
failed or was cancelled (``watch``), an unknown id, or anything else; 2 click's own usage
errors; 64 (EX_USAGE) a definition file that does not load or cannot run, or a bad
``--since``; 69 (EX_UNAVAILABLE) Redis cannot be reached. Tables fit the terminal.

``--json`` shapes (stdout):

- ``submit``: ``{"id", "name"}``; with ``--watch``, the final status (below) instead;
- ``status``, ``watch``: ``{"id", "name", "state", "created_at", "ended_at", "counts":
  {status: n}, "tasks": {task id: {"status", "error", "result", "started_at", "ended_at",
  "duration", "task", "celery_id"}}}`` (``watch``: once, when the workflow ends);
- ``cancel``: ``{"id", "cancelled"}`` (tasks cancelled);
- ``list``: one object per line, newest first: ``{"id", "name", "state", "created_at",
  "ended_at", "tasks", "remaining"}`` (``tasks`` is null for workflows submitted before the
  meta counted them);
- ``reindex``: ``{"added"}``.

Times are Unix seconds in JSON and UTC in tables.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click
from rich.table import Table
from rich.text import Text

from personal_assistant.workers.cli.ops_command import OpsGroup
from personal_assistant.workers.cli.terminal import (
    EX_USAGE,
    CommandFailed,
    ProgressLine,
    UsageError,
    console,
    one_line,
)
from personal_assistant.workers.config import mask_url
from personal_assistant.workers.workflows import index
from personal_assistant.workers.workflows.definition import (
    WorkflowValidationError,
    load_definition_file,
)
from personal_assistant.workers.workflows.runtime import (
    WorkflowNotFound,
    cancel_workflow,
    redis_for,
    submit_workflow,
    workflow_status,
)
from personal_assistant.workers.workflows.trigger_rules import TERMINAL

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

STATUS_STYLE: Final = {
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
EXIT_BY_STATE: Final = {"completed": 0, "running": 0, "failed": 1, "cancelled": 1}
# Tables without borders: two spaces between columns. A task id keeps at least 12 columns (it
# folds below that), an error at least 16 (cut with an ellipsis) on a narrow terminal.
_GAP: Final = 2
_MIN_TASK_COLUMN: Final = 12
_MIN_ERROR_COLUMN: Final = 16
# A page of recent workflows: what fits a screen or two; --limit asks for more.
DEFAULT_LIST_LIMIT: Final = 50


class InvalidWorkflow(click.ClickException):
    """A definition that cannot run: every problem on a line of its own; exit 64."""

    exit_code = EX_USAGE

    def __init__(self, error: WorkflowValidationError) -> None:
        lines = [mask_url(one_line(problem)) for problem in error.problems]
        if len(lines) == 1:
            super().__init__(f"invalid workflow: {lines[0]}")
        else:
            super().__init__("invalid workflow:\n  - " + "\n  - ".join(lines))


def _app(ctx: click.Context) -> WorkerApp:
    """The app ``celery -A`` named (this project's WorkerApp)."""
    app: WorkerApp = ctx.obj.app
    return app


def _status(app: WorkerApp, workflow_id: str) -> dict[str, Any]:
    try:
        return workflow_status(workflow_id, app=app)
    except WorkflowNotFound:
        raise CommandFailed(f"no workflow with id {_printable(workflow_id)}") from None


def _printable(text: object) -> str:
    """``text`` on one line with control characters escaped: task errors and names come from
    tasks and files, and must not drive the terminal."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in one_line(str(text)))


def _clock(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _day_and_time(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%m-%d %H:%M")


def _styled(status: object) -> Text:
    return Text(_printable(status), style=STATUS_STYLE.get(str(status), "white"))


def _task_table(status: dict[str, Any], width: int) -> Table:
    """Each task's line, laid out for ``width`` columns: the times and statuses whole, the task
    id folded only when it must be, the error cut to what is left (``status --json`` has it
    whole)."""
    rows = [
        (
            _printable(tid),
            _styled(info["status"]),
            _clock(info["started_at"]),
            _clock(info["ended_at"]),
            "-" if info["duration"] is None else f"{info['duration']:.2f}s",
            _printable(info["error"] or ""),
        )
        for tid, info in status["tasks"].items()
    ]
    headers = ("task", "status", "started", "ended", "took", "error")
    natural = [max([len(h), *(len(str(row[i])) for row in rows)]) for i, h in enumerate(headers)]
    gaps = _GAP * (len(headers) - 1)
    fixed = sum(natural[1:5]) + gaps
    task = min(natural[0], max(_MIN_TASK_COLUMN, width - fixed - _MIN_ERROR_COLUMN))
    error = max(len("error"), min(natural[5], width - fixed - task))
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("task", width=task, overflow="fold")
    for header, size in zip(headers[1:5], natural[1:5], strict=True):
        table.add_column(header, width=size, no_wrap=True)
    table.add_column("error", width=error, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*row)
    return table


def _print_status(status: dict[str, Any]) -> None:
    out = console()
    title = f"workflow {_printable(status['name'])} ({status['id']}): {status['state']}"
    out.print(Text(title, style="bold"))
    out.print(_task_table(status, out.width))


def _progress(info: dict[str, Any], elapsed: float | None) -> str:
    """One line: name, final/total, the count of each status, and the time taken."""
    tasks = info["tasks"].values()
    final = sum(t["status"] in TERMINAL for t in tasks)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(info["counts"].items()))
    took = "" if elapsed is None else f"  {elapsed:.0f}s"
    return f"{_printable(info['name'])}: {info['state']} {final}/{len(tasks)} ({counts}){took}"


def _follow(
    ctx: click.Context, workflow_id: str, interval: float, timeout: float, as_json: bool
) -> None:
    """Follow the workflow on one progress line until it ends; then its table (or JSON)."""
    app = _app(ctx)
    line = ProgressLine()
    started = time.monotonic()
    info = _status(app, workflow_id)
    try:
        while info["state"] == "running":
            elapsed = time.monotonic() - started
            if not as_json:  # the time only on a terminal: a log gets a line per change
                line.update(_progress(info, elapsed if line.live else None))
            if timeout and elapsed > timeout:
                raise CommandFailed(f"workflow still running after {timeout:g}s")
            time.sleep(interval)
            info = _status(app, workflow_id)
    except BaseException:  # Ctrl-C, a timeout, Redis gone: end the line before the error
        line.done()
        raise
    if as_json:
        click.echo(json.dumps(info, indent=2, default=repr))
    else:
        line.done(_progress(info, None))
        _print_status(info)
    ctx.exit(EXIT_BY_STATE.get(str(info["state"]), 1))


@click.group(name="workflow", cls=OpsGroup)
def workflow() -> None:
    """DAG workflows: submit a definition (YAML/JSON), follow it, list, cancel it."""


@workflow.command(name="submit")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--watch", "then_watch", is_flag=True, help="Follow it until it ends.")
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "name"} as JSON.')
@click.pass_context
def submit(ctx: click.Context, path: str, then_watch: bool, as_json: bool) -> None:
    """Validate and start the workflow in PATH; print its id (on a line of its own).

    PATH is a YAML or JSON file of at most 1 MiB, without aliases (*name); its tasks must
    be on the workflow allow-list (the ai, email, file and sync tasks, and
    WORKFLOW_ALLOWED_TASKS). A file that cannot run is refused whole, one line per problem
    (exit 64). With --watch, follow it as `watch` does (and exit as it does).
    """
    try:
        definition = load_definition_file(path)
    except WorkflowValidationError as exc:
        raise InvalidWorkflow(exc) from None
    app = _app(ctx)
    try:
        workflow_id = submit_workflow(definition, app=app)
    except WorkflowValidationError as exc:
        raise InvalidWorkflow(exc) from None
    if as_json and not then_watch:
        click.echo(json.dumps({"id": workflow_id, "name": definition.get("name", "workflow")}))
    elif not as_json:
        click.echo(workflow_id)
    if then_watch:
        _follow(ctx, workflow_id, interval=0.5, timeout=0.0, as_json=as_json)


@workflow.command(name="status")
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, workflow_id: str, as_json: bool) -> None:
    """Print the workflow's state and each task's status, times and error."""
    app = _app(ctx)
    info = _status(app, workflow_id)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=repr))
        return
    _print_status(info)


@workflow.command(name="watch")
@click.argument("workflow_id")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(0.05, 60))
@click.option(
    "--timeout", default=0.0, type=click.FloatRange(0), help="Give up after (s); 0: never."
)
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON only.")
@click.pass_context
def watch(
    ctx: click.Context, workflow_id: str, interval: float, timeout: float, as_json: bool
) -> None:
    """Follow the workflow on one live line until it ends, then print its tasks.

    Exits 0 when it completed, 1 when it failed or was cancelled.
    """
    _follow(ctx, workflow_id, interval, timeout, as_json)


@workflow.command(name="cancel")
@click.argument("workflow_id")
@click.option("--terminate", is_flag=True, help="Also kill tasks already running.")
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "cancelled"} as JSON.')
@click.pass_context
def cancel(ctx: click.Context, workflow_id: str, terminate: bool, as_json: bool) -> None:
    """Cancel every unfinished task of the workflow."""
    app = _app(ctx)
    try:
        count = cancel_workflow(workflow_id, app=app, terminate=terminate)
    except WorkflowNotFound:
        raise CommandFailed(f"no workflow with id {_printable(workflow_id)}") from None
    if as_json:
        click.echo(json.dumps({"id": workflow_id, "cancelled": count}))
    else:
        click.echo(f"cancelled {count} task(s) of workflow {workflow_id}")


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return index.since_time(value, time.time())
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None


def _list_table(rows: list[index.WorkflowSummary]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    # Ids are copied from here: never cut (32 hex digits, 36 for beat's).
    table.add_column("id", no_wrap=True, min_width=max(len(row.id) for row in rows))
    table.add_column("name", overflow="ellipsis", no_wrap=True, ratio=1, min_width=4)
    table.add_column("state", no_wrap=True)
    table.add_column("tasks", no_wrap=True, justify="right")
    table.add_column("created UTC", no_wrap=True)
    for row in rows:
        done = "-"
        if row.tasks is not None and row.remaining is not None:
            done = f"{row.tasks - row.remaining}/{row.tasks}"
        table.add_row(
            row.id,
            _printable(row.name or "-"),
            _styled(row.state or "-"),
            done,
            _day_and_time(row.created_at),
        )
    return table


@workflow.command(name="list")
@click.option("--state", type=click.Choice(index.WORKFLOW_STATES), help="Only these.")
@click.option("--since", metavar="WHEN", help=f"Created since WHEN: {index.SINCE_HELP}.")
@click.option(
    "--limit", default=DEFAULT_LIST_LIMIT, show_default=True, type=click.IntRange(1, 100_000)
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def list_workflows(
    ctx: click.Context, state: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """The workflows still stored (running, or ended within a week), newest first.

    Workflows submitted before this index existed appear after `workflow reindex`.
    """
    after = _since(since)
    app = _app(ctx)
    rows = index.list_workflows(redis_for(app), state=state, since=after, limit=limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_dict()))
        return
    if not rows:
        click.echo("no workflow matches" if state or since else "no workflows stored")
        return
    console().print(_list_table(rows))


@workflow.command(name="reindex")
@click.option("--json", "as_json", is_flag=True, help='Print {"added"} as JSON.')
@click.pass_context
def reindex(ctx: click.Context, as_json: bool) -> None:
    """Add the workflows stored before `workflow list` had an index (once, after upgrading)."""
    app = _app(ctx)
    added = index.reindex(redis_for(app), time.time())
    if as_json:
        click.echo(json.dumps({"added": added}))
    else:
        click.echo(f"indexed {added} workflow(s) that were not listed")
