"""``celery -A personal_assistant.workers.celery_app dlq list|show|replay|purge``.

Registered through Celery's ``celery.commands`` entry point (pyproject.toml).

Entries are checked before they are shown or replayed (dead_letters/checks.py): ``list``
skips one it cannot read and says so on stderr, ``show`` prints an unreadable one's raw text
(clipped, control characters escaped) with the reason, and ``purge`` deletes any entry by id.

``--json`` shapes:

- ``list --json``: one object per line, a dead letter as stored: ``{"id", "task_name",
  "task_id", "args": [...], "kwargs": {...}, "exception_type", "exception", "traceback",
  "queue": str | null, "priority": int | null, "retries": int, "hostname": str | null,
  "failed_at": <unix s>, "reason": str | null, "raw": str | null}`` (``reason`` and ``raw``:
  a message the worker rejected before running it), newest first;
- ``show --json``: that object for one letter (indented);
- ``replay --json``: ``{"replayed": [{"id", "task_id"}], "refused": [{"id", "problem"}]}``;
- ``purge --json``: ``{"purged": int}``.

Errors are one line (cli/schedule_options.py): exit 69 when Redis does not answer, 64 for bad
input (``purge`` without ids), 1 for an unknown or unreadable id and a refused replay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from personal_assistant.workers import constants as c
from personal_assistant.workers.cli.ops_command import OpsGroup
from personal_assistant.workers.cli.terminal import CommandFailed, UsageError, console
from personal_assistant.workers.config import state_redis_url
from personal_assistant.workers.dead_letters.queue import (
    DeadLetter,
    DeadLetterChanged,
    DeadLetterNotFound,
    DeadLetterQueue,
    NotReplayable,
    ReplayRefused,
    UnreadableDeadLetter,
    UnreadableEntry,
    shown_id,
)

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

# `dlq show` of an unreadable entry prints this much of it: enough to see what it is (a
# well-formed entry is a few kilobytes); the rest stays in Redis until purged.
SHOW_RAW_BYTES: Final = 8 * 1024
# Ids of unreadable entries named in `dlq list`'s note; the rest are counted.
UNREADABLE_IDS_NAMED: Final = 10
# The table shows the project's tasks without this prefix (the JSON keeps full names).
TASK_PREFIX: Final = c.TASKS_PACKAGE + "."
# A width no table reaches, to measure one unconstrained (its natural width).
NO_EDGE: Final = 100_000
# Characters of an error and of the arguments in the table (`dlq show ID` has them whole).
ERROR_SHOWN: Final = 80
ARGS_SHOWN: Final = 40


def _queue(ctx: click.Context) -> DeadLetterQueue:
    app: WorkerApp = ctx.obj.app
    url = state_redis_url(str(app.conf.broker_url), str(app.conf.result_backend))
    try:
        return DeadLetterQueue.from_url(url, max_entries=app.settings.dlq_max_entries)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, width: int = ARGS_SHOWN) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= width else text[: width - 1] + "…"


def _printable(text: str) -> str:
    """``text`` with control characters escaped, so a tampered entry cannot drive the terminal."""
    return "".join(
        ch if ch.isprintable() or ch in "\n\t" else ch.encode("unicode_escape").decode()
        for ch in text
    )


def _report_unreadable(entries: Sequence[UnreadableEntry]) -> None:
    """One line on stderr naming the entries ``list`` skipped, and how to look at them."""
    if not entries:
        return
    named = [shown_id(entry.id) for entry in entries[:UNREADABLE_IDS_NAMED]]
    more = len(entries) - len(named)
    ids = ", ".join(named) + (f" and {more} more" if more else "")
    noun = "entry" if len(entries) == 1 else "entries"
    hint = named[0] if len(entries) == 1 else "ID"
    click.echo(f"{len(entries)} unreadable {noun} skipped: {ids}; see `dlq show {hint}`", err=True)


@click.group(name="dlq", cls=OpsGroup)
@click.pass_context
def dlq(ctx: click.Context) -> None:
    """Dead letters: tasks that failed for good. List, show, replay or purge them."""


def _error(letter: DeadLetter) -> str:
    kind = f"rejected, {letter.reason}" if letter.reason else letter.exception_type
    text = f"{kind}: {letter.exception}"
    return text if len(text) <= ERROR_SHOWN else text[: ERROR_SHOWN - 1] + "…"


def _wide_table(title: str, letters: Sequence[DeadLetter]) -> Table:
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    table.add_column("failed at (UTC)", no_wrap=True)
    for column in ("task", "args", "error", "queue"):
        table.add_column(column, overflow="fold")
    table.add_column("retries", justify="right")
    for letter in letters:
        # Text, not str: rich reads a str as markup, and entries are not ours to trust.
        table.add_row(
            Text(letter.id),
            _when(letter.failed_at),
            Text(letter.task_name.removeprefix(TASK_PREFIX)),
            Text(_short([letter.args, letter.kwargs])),
            Text(_error(letter)),
            Text(letter.queue or "-"),
            str(letter.retries),
        )
    return table


def _narrow_table(title: str, letters: Sequence[DeadLetter]) -> Table:
    # Two columns of lines: the id whole (what `dlq show` takes) above its time, and the task
    # above its arguments and error; seven columns in 80 characters would cut every cell.
    table = Table(title=title)
    table.add_column("id / failed at (UTC)", no_wrap=True)
    table.add_column("task (queue, retries) / args / error", overflow="fold")
    for letter in letters:
        where = f" ({letter.queue or '-'}, {letter.retries} retries)"
        table.add_row(
            Text(letter.id) + Text("\n" + _when(letter.failed_at), style="dim"),
            Text("\n").join(
                [
                    Text(letter.task_name.removeprefix(TASK_PREFIX) + where),
                    Text(_short([letter.args, letter.kwargs]), style="dim"),
                    Text(_error(letter), style="red"),
                ]
            ),
        )
    return table


def letters_table(title: str, letters: Sequence[DeadLetter], out: Console) -> Table:
    """One line per letter when that fits the terminal, else two columns of several lines."""
    wide = _wide_table(title, letters)
    natural = Measurement.get(out, out.options.update_width(NO_EDGE), wide).maximum
    return wide if natural <= out.width else _narrow_table(title, letters)


@dlq.command(name="list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (shape above).")
@click.pass_context
def list_letters(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List dead letters, newest first (an unreadable one is named on stderr).

    \b
    --json prints one object per line, a dead letter as stored:
      {"id", "task_name", "task_id", "args": [...], "kwargs": {...},
       "exception_type", "exception", "traceback", "queue", "priority",
       "retries", "hostname", "failed_at": UNIX_S, "reason", "raw"}
    ("reason" and "raw": a message the worker rejected unrun, else null).
    """
    queue = _queue(ctx)
    listing = queue.scan(limit)
    if as_json:
        for letter in listing.letters:
            click.echo(letter.to_json())
        _report_unreadable(listing.unreadable)
        return
    out = console()
    title = f"Dead letters ({len(queue)} in all, newest first)"
    out.print(letters_table(title, listing.letters, out))
    _report_unreadable(listing.unreadable)


def _show_text(letter: DeadLetter) -> None:
    """The letter as an operator reads it: a field a line, then the traceback as printed."""
    where = f"{letter.queue or '-'}, priority {letter.priority}, {letter.retries} retries"
    fields = [
        ("id", letter.id),
        ("task", f"{letter.task_name} (task id {letter.task_id})"),
        ("failed at", f"{_when(letter.failed_at)} UTC on {letter.hostname or '-'}"),
        ("queue", where),
        ("args", json.dumps(letter.args, default=repr)),
        ("kwargs", json.dumps(letter.kwargs, default=repr)),
        ("error", f"{letter.exception_type}: {letter.exception}"),
    ]
    if letter.reason is not None:
        fields.append(("rejected", f"{letter.reason} (it cannot be replayed)"))
    for name, value in fields:
        click.echo(_printable(f"{name + ':':<11}{value}"))
    if letter.raw is not None:
        click.echo("message as received:")
        click.echo(_printable(letter.raw))
    click.echo("traceback:")
    click.echo(_printable(letter.traceback.rstrip("\n") or "-"))


@dlq.command(name="show")
@click.argument("letter_id")
@click.option("--json", "as_json", is_flag=True, help="The letter as stored (as list --json).")
@click.pass_context
def show_letter(ctx: click.Context, letter_id: str, as_json: bool) -> None:
    """Print one dead letter whole, its traceback as printed (an unreadable one raw, with why)."""
    queue = _queue(ctx)
    try:
        letter = queue.get(letter_id)
    except DeadLetterNotFound:
        raise CommandFailed(f"no dead letter with id {shown_id(letter_id)}") from None
    except UnreadableDeadLetter as exc:
        try:
            entry = queue.get_raw(letter_id, SHOW_RAW_BYTES)
        except DeadLetterNotFound:
            raise CommandFailed(f"no dead letter with id {shown_id(letter_id)}") from None
        click.echo(_printable(entry.text))
        shown = "all" if entry.size <= SHOW_RAW_BYTES else f"the first {SHOW_RAW_BYTES}"
        raise CommandFailed(
            f"{exc}; above is {shown} of its {entry.size} bytes as stored; "
            f"delete it with `dlq purge {shown_id(letter_id)}`"
        ) from None
    if as_json:
        click.echo(json.dumps(json.loads(letter.to_json()), indent=2))
    else:
        _show_text(letter)


@dlq.command(name="replay")
@click.argument("letter_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (shape above).")
@click.pass_context
def replay_letters(ctx: click.Context, letter_ids: tuple[str, ...], as_json: bool) -> None:
    """Send the tasks again, to their first queue and priority; replayed entries leave the DLQ.

    An entry that does not read, or names a task, queue or priority this deployment does not
    run, is refused with one line naming it and what is wrong, and stays in the DLQ (exit 1).

    \b
    --json prints one object:
      {"replayed": [{"id", "task_id"}], "refused": [{"id", "problem"}]}
    """
    queue = _queue(ctx)
    app: WorkerApp = ctx.obj.app
    replayed: list[dict[str, str]] = []
    refused: list[dict[str, str]] = []
    for letter_id in letter_ids:
        shown = shown_id(letter_id)
        try:
            new_id = queue.replay(letter_id, app)
        except DeadLetterNotFound:
            refused.append({"id": letter_id, "problem": f"no dead letter with id {shown}"})
            continue
        except (UnreadableDeadLetter, ReplayRefused) as exc:
            problem = f"{exc}; it stays in the dead-letter queue (`dlq show {shown}`)"
            refused.append({"id": letter_id, "problem": problem})
            continue
        except (NotReplayable, DeadLetterChanged) as exc:
            refused.append({"id": letter_id, "problem": str(exc)})
            continue
        replayed.append({"id": letter_id, "task_id": new_id})
        if not as_json:
            click.echo(f"replayed {letter_id} as task {new_id}")
    if as_json:
        click.echo(json.dumps({"replayed": replayed, "refused": refused}))
        if refused:
            ctx.exit(1)
    elif refused:
        # One line per refused entry (click prints the first after "Error: ").
        raise click.ClickException("\n".join(item["problem"] for item in refused))


@dlq.command(name="purge")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="Delete every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help='One JSON object, {"purged": N}.')
@click.pass_context
def purge_letters(
    ctx: click.Context,
    letter_ids: tuple[str, ...],
    purge_all: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete the given dead letters, or all of them with --all (unreadable ones too)."""
    if not letter_ids and not purge_all:
        raise UsageError("name the dead letters to purge, or pass --all")
    queue = _queue(ctx)
    if purge_all and not yes:
        click.confirm(f"Delete all {len(queue)} dead letters? There is no undo", abort=True)
    removed = queue.purge(None if purge_all else list(letter_ids))
    click.echo(json.dumps({"purged": removed}) if as_json else f"purged {removed} dead letter(s)")
