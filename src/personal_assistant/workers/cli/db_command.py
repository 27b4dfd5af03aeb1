"""``celery -A personal_assistant.workers.celery_app db upgrade|current``: the domain store.

``upgrade`` migrates the store (DATABASE_URL, else DATA_DIR/assistant.db) to the newest
schema; run it before starting workers of a new release (``make run`` runs it on start).
Errors are one line naming what failed, the URL masked (cli/schedule_options.py); a store that
cannot be reached exits with 69 (EX_UNAVAILABLE), as Celery's commands do for an unavailable
broker; any other store error with 1.

``--json`` shapes: ``upgrade --json``: ``{"before": <revision> | null, "after": <revision>}``;
``current --json``: ``{"current": <revision> | null, "head": <revision>, "up_to_date": bool}``
(``current`` exits 1 when an upgrade is due, with ``--json`` too).
"""

from __future__ import annotations

import json

import click
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from personal_assistant.workers.cli.ops_command import OpsGroup, reason
from personal_assistant.workers.cli.terminal import CommandFailed, Unavailable
from personal_assistant.workers.config import WorkerSettings, mask_url
from personal_assistant.workers.store import migrate


def _fail(settings: WorkerSettings, exc: SQLAlchemyError) -> CommandFailed:
    url = mask_url(settings.store_url)
    # The driver's first line says what failed; the rest is SQLAlchemy's help link.
    why = reason(getattr(exc, "orig", None) or exc)
    if isinstance(exc, OperationalError):
        return Unavailable(f"store {url} unavailable: {why}")
    return CommandFailed(f"store {url}: {type(exc).__name__}: {why}")


@click.group(name="db", cls=OpsGroup)
def db() -> None:
    """The domain store (e-mail outbox, calendar events, AI jobs): migrations."""


@db.command(name="upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option(
    "--json", "as_json", is_flag=True, help='One JSON object: {"before": REV|null, "after": REV}.'
)
@click.pass_context
def upgrade(ctx: click.Context, revision: str, as_json: bool) -> None:
    """Migrate the store to the newest schema (or to --revision)."""
    settings: WorkerSettings = ctx.obj.app.settings
    try:
        result = migrate.upgrade(settings.store_url, revision)
    except SQLAlchemyError as exc:
        raise _fail(settings, exc) from None
    if as_json:
        click.echo(json.dumps({"before": result.before, "after": result.after}))
    elif result.changed:
        click.echo(f"store {mask_url(settings.store_url)}: {result.before} -> {result.after}")
    else:
        click.echo(f"store {mask_url(settings.store_url)}: at {result.after}, nothing to do")


@db.command(name="current")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object: {"current": REV|null, "head": REV, "up_to_date": BOOL}.',
)
@click.pass_context
def current(ctx: click.Context, as_json: bool) -> None:
    """The store's revision and the newest one; exits 1 when an upgrade is due."""
    settings: WorkerSettings = ctx.obj.app.settings
    try:
        revision = migrate.current_revision(settings.store_url)
    except SQLAlchemyError as exc:
        raise _fail(settings, exc) from None
    head = migrate.head_revision()
    if as_json:
        click.echo(json.dumps({"current": revision, "head": head, "up_to_date": revision == head}))
    else:
        state = "up to date" if revision == head else "upgrade due (celery ... db upgrade)"
        click.echo(f"store {mask_url(settings.store_url)}: at {revision}, newest {head}: {state}")
    if revision != head:
        ctx.exit(1)
