"""``celery -A personal_assistant.workers.celery_app schedule ...``: the beat schedule.

``list``, ``add``, ``remove``, ``disable``, ``enable`` and ``run-now``, on the schedule as the
enhanced scheduler runs it (schedulers/enhanced_scheduler.py): the entries declared in code, the
entries added at run time and which are disabled, kept in the broker's Redis
(schedulers/entry_store.py). A change bumps the store's counter, and a running
beat reloads within one tick; no beat has to run for a change to be stored, and ``run-now``
sends a run whether a beat runs or not.

``list --json`` prints one JSON object::

    {"lock_holder": "host:pid:suffix" or null,
     "entries": [{"name", "state" ("enabled" | "disabled" | "invalid"),
                  "source" ("declared" | "added"), "target" (the task, or "workflow NAME"),
                  "schedule", "queue" (null: the task's own), "last_run", "next_run"
                  (Unix seconds or null), "run_count", "skips" ({reason: count}),
                  "last_skip", "problem" (why an invalid entry cannot run, else null)}, ...]}

Errors are one line, ``Error: ...``; exit codes (cli/schedule_options.py): 64 for bad input
(nothing stored), 2 for click's own usage errors, 69 when Redis does not answer, 1 otherwise
(an unknown entry name).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from personal_assistant.workers import constants as c
from personal_assistant.workers import redis_clients, routing
from personal_assistant.workers.cli.ops_command import (
    ClickUsage,
    OpsCommand,
    OpsGroup,
    suggestion,
    usage_line,
)
from personal_assistant.workers.cli.schedule_options import add_options, entry_data
from personal_assistant.workers.cli.terminal import CommandFailed, UsageError, console
from personal_assistant.workers.config import is_redis_url, mask_url
from personal_assistant.workers.schedulers.beat_catalogue import (
    Catalogue,
    check_entry,
    declared_data,
    known_task_names,
    load_catalogue,
)
from personal_assistant.workers.schedulers.beat_entry import EntryError, entry_from_data
from personal_assistant.workers.schedulers.beat_report import EntryRow, entry_rows, lock_holder
from personal_assistant.workers.schedulers.beat_timing import next_time
from personal_assistant.workers.schedulers.entry_store import EntryStore
from personal_assistant.workers.schedulers.run_claims import record_manual_run
from personal_assistant.workers.schedulers.run_send import send_run
from personal_assistant.workers.workflows.definition import WorkflowValidationError

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

STATE_STYLE = {"enabled": "green", "disabled": "yellow", "invalid": "bold red"}
# The table shows the project's tasks without this prefix (the JSON keeps full names): every
# declared task has it, and it would take a third of an 80-column terminal.
TASK_PREFIX = c.TASKS_PACKAGE + "."
# (heading, how many of _cells' cells the column holds, its share of a narrow terminal's width
# or 0), for each layout. The wide one (a line per entry) is chosen when it fits.
Columns = tuple[tuple[str, int, int], ...]
WIDE_COLUMNS: Columns = tuple(
    (heading, 1, 0)
    for heading in (
        "name",
        "source",
        "state",
        "task / workflow",
        "queue",
        "schedule",
        "next run",
        "last run",
        "runs",
        "skips",
    )
)
NARROW_COLUMNS: Columns = (
    ("entry", 2, 0),
    ("state", 1, 0),
    ("task / workflow", 2, 4),
    ("when", 3, 3),
    ("runs", 2, 2),
)
# A width no table of entries reaches, to measure one unconstrained.
NO_EDGE = 100_000


class ScheduleCommand(OpsCommand):
    """A ``schedule`` sub-command: click's usage error for an entry names the entry."""

    def usage_error(self, exc: click.UsageError) -> ClickUsage:
        """``beat entry 'NAME': <click's message>`` when NAME was read, else click's message."""
        name = exc.ctx.params.get("name") if exc.ctx is not None else None
        line = usage_line(exc)
        return ClickUsage(str(EntryError(name, line.message))) if name else line


class ScheduleGroup(OpsGroup):
    """The ``schedule`` group: one-line errors (cli/schedule_options.py), the entry named."""

    command_class = ScheduleCommand


def _app(ctx: click.Context) -> WorkerApp:
    """The app ``celery -A`` named (this project's WorkerApp)."""
    app: WorkerApp = ctx.obj.app
    return app


def _store(ctx: click.Context) -> EntryStore:
    """The store of run-time changes, in the broker's Redis (where beat keeps its state)."""
    url = str(_app(ctx).conf.broker_url)
    if not is_redis_url(url):
        raise UsageError(f"the beat schedule lives in Redis; the broker {mask_url(url)} is not")
    return EntryStore(redis_clients.client_for(url))


def _declared_names(app: WorkerApp) -> set[str]:
    declared, problems = declared_data(app)
    return set(declared) | set(problems)


def _added_names(store: EntryStore) -> set[str]:
    added, broken = store.added()
    return set(added) | set(broken)


def _bad(name: str, problem: str) -> UsageError:
    return UsageError(str(EntryError(name, problem)))


def _unknown(name: str, known: set[str]) -> CommandFailed:
    return CommandFailed(f"no entry named {name!r}{suggestion(name, known)}")


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _queue_cell(row: EntryRow) -> str:
    if row.queue is not None:
        return row.queue
    if row.state == "invalid" or row.target.startswith("workflow "):
        return "-"  # a workflow's tasks go each to its own queue
    return routing.queue_for_task(row.target)


def _cells(row: EntryRow) -> list[tuple[str, Text]]:
    """The row's cells as (label, text); the label heads a line in the narrow layout."""
    skips = ", ".join(f"{reason} {count}" for reason, count in sorted(row.skips.items()))
    # Text, not str: rich reads a str as markup, and an added entry's text is an operator's.
    return [
        ("", Text(row.name, style="bold")),
        ("", Text(row.source, style="dim")),
        ("", Text(row.state, style=STATE_STYLE.get(row.state, ""))),
        ("", Text(row.target.removeprefix(TASK_PREFIX) or "-")),
        ("queue ", Text(_queue_cell(row))),
        ("", Text(row.schedule or "-")),
        ("next ", Text(_when(row.next_run))),
        ("last ", Text(_when(row.last_run))),
        ("", Text(str(row.run_count))),
        ("skips ", Text(skips or "-")),
    ]


def _build_table(rows: list[EntryRow], groups: Columns, width: int) -> Table:
    # A narrow table takes the whole width: the names as wide as they are (up to a third of
    # it: they are what an operator types next), the rest shared by the columns' ratios.
    narrow = any(ratio for _, _, ratio in groups)
    table = Table(title="Beat entries (times in UTC)", expand=narrow)
    for heading, _size, ratio in groups:
        if heading == "entry":
            table.add_column(heading, overflow="fold", max_width=max(10, width // 3))
        elif ratio:
            table.add_column(heading, overflow="fold", ratio=ratio)
        else:
            table.add_column(heading, no_wrap=True)
    for row in rows:
        cells = iter(_cells(row))
        line: list[Text] = []
        for _, size, _ in groups:
            parts = [next(cells) for _ in range(size)]
            if size == 1:
                line.append(parts[0][1])
                continue
            # Labelled lines; a line that says nothing ("queue -", "skips -") is left out.
            shown = [(label, text) for label, text in parts if not (label and text.plain == "-")]
            line.append(Text("\n").join(Text(label) + text for label, text in shown))
        table.add_row(*line)
    return table


def _table(rows: list[EntryRow], out: Console) -> Table:
    """One line per entry when that fits the terminal; else fewer columns of several lines
    each (ten columns in 80 characters would cut every name and time into pieces)."""
    wide = _build_table(rows, WIDE_COLUMNS, out.width)
    # Measured as if the terminal had no edge: the table's natural width, one line per entry.
    natural = Measurement.get(out, out.options.update_width(NO_EDGE), wide).maximum
    if natural <= out.width:
        return wide
    return _build_table(rows, NARROW_COLUMNS, out.width)


@click.group(name="schedule", cls=ScheduleGroup)
def schedule() -> None:
    """The beat schedule: list entries, add or remove run-time ones, disable, enable, run now."""


@schedule.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (shape above).")
@click.pass_context
def list_entries(ctx: click.Context, as_json: bool) -> None:
    """Every entry (declared in code, added, and invalid ones with their problem), its state and
    runs, and which beat holds the lock.

    \b
    --json prints one object:
      {"lock_holder": "host:pid:suffix" | null,
       "entries": [{"name", "state", "source", "target", "schedule", "queue",
                    "last_run", "next_run", "run_count", "skips", "last_skip",
                    "problem"}]}
    """
    store = _store(ctx)
    catalogue = load_catalogue(_app(ctx), store, time.time())
    rows = entry_rows(store.client, catalogue)
    holder = lock_holder(store.client)
    if as_json:
        click.echo(json.dumps({"lock_holder": holder, "entries": [r.as_json() for r in rows]}))
        return
    out = console()  # the terminal's width: the table picks the layout that fits it
    out.print(Text(f"lock held by {holder}" if holder else "no beat holds the lock"))
    out.print(_table(rows, out))
    for row in rows:
        if row.problem is not None:
            out.print(Text(f"{row.state}: {row.problem}", style="red"))


@schedule.command(name="add")
# Eager: read before the options, so an option click refuses is reported naming the entry.
@click.argument("name", is_eager=True)
@add_options
@click.pass_context
def add(ctx: click.Context, /, name: str, replace: bool, **options: Any) -> None:
    """Add an entry NAME that runs a task (or a workflow) on a cron or an interval.

    It is checked as beat checks it (the task, the queue, the window opening for its times, the
    workflow), and refused whole with one line saying why. A name declared in code is refused:
    change it in code, or disable it.
    """
    app = _app(ctx)
    try:
        data = entry_data(name, options)
        if name in _declared_names(app):
            raise _bad(name, "is declared in code; change it there (or `schedule disable` it)")
        entry = entry_from_data(name, data)
        check_entry(app, entry, time.time(), known_task_names(app))
        replaced = _store(ctx).add(entry, replace=replace)
    except EntryError as exc:
        raise UsageError(str(exc)) from None
    verb = "replaced" if replaced else "added"
    state = "enabled" if entry.enabled else "disabled"
    upcoming = _when(next_time(entry, time.time()))
    click.echo(
        f"{verb} beat entry {name!r} ({state}): {entry.describe_schedule()}, "
        f"next time {upcoming} UTC"
    )


@schedule.command(name="remove")
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Remove the added entry NAME (an entry declared in code can only be disabled)."""
    store = _store(ctx)
    added = _added_names(store)
    # An added entry may share a declared name (a release declared it since); removing it is
    # how an operator clears that conflict, so the added one is looked for first.
    if name not in added:
        declared = _declared_names(_app(ctx))
        if name in declared:
            raise _bad(name, "is declared in code and cannot be removed; `schedule disable` it")
        raise _unknown(name, added | declared)
    store.remove(name)
    click.echo(f"removed beat entry {name!r}")


def _set_enabled(ctx: click.Context, name: str, enabled: bool) -> None:
    store = _store(ctx)
    known = _declared_names(_app(ctx)) | _added_names(store)
    if name not in known:
        raise _unknown(name, known)
    changed = store.set_enabled(name, enabled)
    state = "enabled" if enabled else "disabled"
    click.echo(
        f"{state} beat entry {name!r}" if changed else f"beat entry {name!r} was already {state}"
    )


@schedule.command(name="disable")
@click.argument("name")
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Stop beat from sending NAME (declared or added) until it is enabled again."""
    _set_enabled(ctx, name, False)


@schedule.command(name="enable")
@click.argument("name")
@click.pass_context
def enable(ctx: click.Context, name: str) -> None:
    """Let beat send NAME again."""
    _set_enabled(ctx, name, True)


@schedule.command(name="run-now")
@click.argument("name")
@click.pass_context
def run_now(ctx: click.Context, name: str) -> None:
    """Send one run of NAME now, with a new id (printed), whether or not a beat is running.

    The run is outside the schedule: the entry's next time and run count stay as they are.
    A disabled entry runs too (it is disabled for beat, not for the operator).
    """
    app = _app(ctx)
    catalogue: Catalogue = load_catalogue(app, _store(ctx), time.time())
    entry = catalogue.entries.get(name)
    if entry is None:
        problem = catalogue.problems.get(name)
        if problem is not None:
            raise CommandFailed(f"{problem}; it cannot run")
        raise _unknown(name, set(catalogue.entries) | set(catalogue.problems))
    run_id = uuid.uuid4().hex if entry.workflow is not None else str(uuid.uuid4())
    try:
        send_run(app, entry, run_id, due=time.time())
    except WorkflowValidationError as exc:
        raise CommandFailed(str(EntryError(name, str(exc)))) from None
    record_manual_run(_store(ctx).client, name, run_id)
    click.echo(run_id)
