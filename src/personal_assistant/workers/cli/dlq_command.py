"""``celery -A personal_assistant.workers.celery_app dlq list|show|replay|purge``.

Registered through Celery's ``celery.commands`` entry point (pyproject.toml).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from personal_assistant.workers.config import state_redis_url
from personal_assistant.workers.utils.error_handling import (
    DeadLetterNotFound,
    DeadLetterQueue,
    NotReplayable,
)


def _queue(ctx: click.Context) -> DeadLetterQueue:
    app = ctx.obj.app
    settings = getattr(app, "settings", None)
    url = state_redis_url(str(app.conf.broker_url), str(app.conf.result_backend))
    max_entries = settings.dlq_max_entries if settings is not None else 10_000
    try:
        return DeadLetterQueue.from_url(url, max_entries=max_entries)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= width else text[: width - 1] + "…"


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
    letters = queue.list(limit)
    if as_json:
        for letter in letters:
            click.echo(letter.to_json())
        return
    table = Table(title=f"Dead letters ({len(queue)} in all, newest first)")
    for column in ("id", "failed at (UTC)", "task", "args", "error", "queue", "retries"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter.id,
            _when(letter.failed_at),
            letter.task_name,
            _short([letter.args, letter.kwargs]),
            (f"rejected, {letter.reason}" if letter.reason else letter.exception_type)
            + f": {letter.exception}"[:80],
            letter.queue or "-",
            str(letter.retries),
        )
    Console(width=200).print(table)


@dlq.command(name="show")
@click.argument("letter_id")
@click.pass_context
def show_letter(ctx: click.Context, letter_id: str) -> None:
    """Print one dead letter whole, traceback included."""
    try:
        letter = _queue(ctx).get(letter_id)
    except DeadLetterNotFound:
        raise click.ClickException(f"no dead letter with id {letter_id}") from None
    click.echo(json.dumps(json.loads(letter.to_json()), indent=2))


@dlq.command(name="replay")
@click.argument("letter_ids", nargs=-1, required=True)
@click.pass_context
def replay_letters(ctx: click.Context, letter_ids: tuple[str, ...]) -> None:
    """Send the tasks again, to their first queue and priority; replayed entries leave the DLQ."""
    queue = _queue(ctx)
    missing: list[str] = []
    refused: list[str] = []
    for letter_id in letter_ids:
        try:
            new_id = queue.replay(letter_id, ctx.obj.app)
        except DeadLetterNotFound:
            missing.append(letter_id)
            continue
        except NotReplayable as exc:
            refused.append(str(exc))
            continue
        click.echo(f"replayed {letter_id} as task {new_id}")
    problems = refused + ([f"no dead letter with id {', '.join(missing)}"] if missing else [])
    if problems:
        raise click.ClickException("; ".join(problems))


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
    """Delete the given dead letters, or all of them with --all."""
    if not letter_ids and not purge_all:
        raise click.UsageError("name the dead letters to purge, or pass --all")
    queue = _queue(ctx)
    if purge_all and not yes:
        click.confirm(f"Delete all {len(queue)} dead letters? There is no undo", abort=True)
    removed = queue.purge(None if purge_all else list(letter_ids))
    click.echo(f"purged {removed} dead letter(s)")
