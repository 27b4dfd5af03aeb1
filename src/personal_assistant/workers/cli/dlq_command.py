"""``celery -A personal_assistant.workers.celery_app dlq list|show|replay|purge``.

Registered through Celery's ``celery.commands`` entry point (pyproject.toml).

Entries are checked before they are shown or replayed (dead_letters/checks.py): ``list``
skips one it cannot read and says so on stderr, ``show`` prints an unreadable one's raw text
(clipped, control characters escaped) with the reason, and ``purge`` deletes any entry by id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from personal_assistant.workers.config import state_redis_url
from personal_assistant.workers.dead_letters.queue import (
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


def _queue(ctx: click.Context) -> DeadLetterQueue:
    app: WorkerApp = ctx.obj.app
    url = state_redis_url(str(app.conf.broker_url), str(app.conf.result_backend))
    try:
        return DeadLetterQueue.from_url(url, max_entries=app.settings.dlq_max_entries)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, width: int = 40) -> str:
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


@click.group(name="dlq")
@click.pass_context
def dlq(ctx: click.Context) -> None:
    """Dead letters: tasks that failed for good. List, show, replay or purge them."""


@dlq.command(name="list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def list_letters(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List dead letters, newest first."""
    queue = _queue(ctx)
    listing = queue.scan(limit)
    if as_json:
        for letter in listing.letters:
            click.echo(letter.to_json())
        _report_unreadable(listing.unreadable)
        return
    table = Table(title=f"Dead letters ({len(queue)} in all, newest first)")
    for column in ("id", "failed at (UTC)", "task", "args", "error", "queue", "retries"):
        table.add_column(column, overflow="fold")
    for letter in listing.letters:
        error = (
            f"rejected, {letter.reason}" if letter.reason else letter.exception_type
        ) + f": {letter.exception}"[:80]
        # Text, not str: rich reads a str as markup, and entries are not ours to trust.
        table.add_row(
            Text(letter.id),
            _when(letter.failed_at),
            Text(letter.task_name),
            Text(_short([letter.args, letter.kwargs])),
            Text(error),
            Text(letter.queue or "-"),
            str(letter.retries),
        )
    Console(width=200).print(table)
    _report_unreadable(listing.unreadable)


@dlq.command(name="show")
@click.argument("letter_id")
@click.pass_context
def show_letter(ctx: click.Context, letter_id: str) -> None:
    """Print one dead letter whole, traceback included (an unreadable one raw, with why)."""
    queue = _queue(ctx)
    try:
        letter = queue.get(letter_id)
    except DeadLetterNotFound:
        raise click.ClickException(f"no dead letter with id {shown_id(letter_id)}") from None
    except UnreadableDeadLetter as exc:
        try:
            entry = queue.get_raw(letter_id, SHOW_RAW_BYTES)
        except DeadLetterNotFound:
            raise click.ClickException(f"no dead letter with id {shown_id(letter_id)}") from None
        click.echo(_printable(entry.text))
        shown = "all" if entry.size <= SHOW_RAW_BYTES else f"the first {SHOW_RAW_BYTES}"
        raise click.ClickException(
            f"{exc}; above is {shown} of its {entry.size} bytes as stored; "
            f"delete it with `dlq purge {shown_id(letter_id)}`"
        ) from None
    click.echo(json.dumps(json.loads(letter.to_json()), indent=2))


@dlq.command(name="replay")
@click.argument("letter_ids", nargs=-1, required=True)
@click.pass_context
def replay_letters(ctx: click.Context, letter_ids: tuple[str, ...]) -> None:
    """Send the tasks again, to their first queue and priority; replayed entries leave the DLQ.

    An entry that does not read, or names a task, queue or priority this deployment does not
    run, is refused with one line naming it and what is wrong, and stays in the DLQ.
    """
    queue = _queue(ctx)
    app: WorkerApp = ctx.obj.app
    missing: list[str] = []
    refused: list[str] = []
    for letter_id in letter_ids:
        try:
            new_id = queue.replay(letter_id, app)
        except DeadLetterNotFound:
            missing.append(shown_id(letter_id))
            continue
        except (UnreadableDeadLetter, ReplayRefused) as exc:
            refused.append(
                f"{exc}; it stays in the dead-letter queue (`dlq show {shown_id(letter_id)}`)"
            )
            continue
        except (NotReplayable, DeadLetterChanged) as exc:
            refused.append(str(exc))
            continue
        click.echo(f"replayed {letter_id} as task {new_id}")
    problems = refused + ([f"no dead letter with id {', '.join(missing)}"] if missing else [])
    if problems:
        # One line per refused entry: a problem list of one entry is joined with "; ".
        raise click.ClickException("\n".join(problems))


@dlq.command(name="purge")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="Delete every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge_letters(
    ctx: click.Context,
    letter_ids: tuple[str, ...],
    purge_all: bool,
    yes: bool,
) -> None:
    """Delete the given dead letters, or all of them with --all (unreadable ones too)."""
    if not letter_ids and not purge_all:
        raise click.UsageError("name the dead letters to purge, or pass --all")
    queue = _queue(ctx)
    if purge_all and not yes:
        click.confirm(f"Delete all {len(queue)} dead letters? There is no undo", abort=True)
    removed = queue.purge(None if purge_all else list(letter_ids))
    click.echo(f"purged {removed} dead letter(s)")
