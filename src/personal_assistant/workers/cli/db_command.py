"""``celery -A personal_assistant.workers.celery_app db upgrade|current``: the domain store.

``upgrade`` migrates the store (DATABASE_URL, else DATA_DIR/assistant.db) to the newest
schema; run it before starting workers of a new release (``make run`` runs it on start).
Errors are one line naming what failed, the URL masked; a store that cannot be reached exits
with 69 (EX_UNAVAILABLE), as Celery's commands do for an unavailable broker.
"""

from __future__ import annotations

import json
import os

import click
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from personal_assistant.workers.config import WorkerSettings, mask_url
from personal_assistant.workers.store import migrate

EX_UNAVAILABLE = getattr(os, "EX_UNAVAILABLE", 69)


class StoreUnavailable(click.ClickException):
    """The store did not answer: exit code 69."""

    exit_code = EX_UNAVAILABLE


def _fail(settings: WorkerSettings, exc: SQLAlchemyError) -> click.ClickException:
    url = mask_url(settings.store_url)
    # The driver's first line says what failed; the rest is SQLAlchemy's help link.
    reason = mask_url(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0])
    if isinstance(exc, OperationalError):
        return StoreUnavailable(f"store {url} unavailable: {reason}")
    return click.ClickException(f"store {url}: {type(exc).__name__}: {reason}")


@click.group(name="db")
def db() -> None:
    """The domain store (e-mail outbox, calendar events, AI jobs): migrations."""


@db.command(name="upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: before and after.")
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
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
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
