"""Schema migrations (Alembic), run by ``celery ... db upgrade`` and by ``make run``.

The migration scripts ship inside the package (store/migrations), so an installed wheel
migrates without an ``alembic.ini``. An upgrade is one transaction holding the store's lock:
SQLite's write lock (taken at BEGIN IMMEDIATE, store/engine.py) or a PostgreSQL advisory lock
(PostgreSQL's DDL is transactional too). Two processes upgrading at once serialize, and the
second finds nothing left to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from personal_assistant.workers.store.engine import engine_for

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported inside the functions: every worker, beat and celery command imports this
# module (through the domain tasks and readiness), and Alembic costs about 0.2 s of each one's
# start-up while only upgrades and the revision checks use it.

SCRIPT_LOCATION = "personal_assistant.workers.store:migrations"
# PostgreSQL advisory lock held by an upgrade (any number, fixed per application: the digits
# spell "pa-migrate" loosely). SQLite needs none: its write lock is taken at BEGIN IMMEDIATE.
MIGRATION_LOCK_KEY = 0x7061_6D69_6772


def alembic_config() -> Config:
    """Alembic's configuration for the package's migration scripts."""
    from alembic.config import Config  # noqa: PLC0415 - see the imports

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    """The newest revision the package ships."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - see the imports

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations found")
    return head


def current_revision_on(connection: Connection) -> str | None:
    """The revision of the store ``connection`` is connected to (None: not migrated yet)."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - see the imports

    return MigrationContext.configure(connection).get_current_revision()


def current_revision(url: str) -> str | None:
    """The revision the store at ``url`` is at (None: not migrated yet)."""
    with engine_for(url).connect() as connection:
        return current_revision_on(connection)


@dataclass(frozen=True)
class UpgradeResult:
    """What an upgrade did: the revision before and after (equal when nothing was due)."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        """True when at least one migration ran."""
        return self.before != self.after


def upgrade(url: str, revision: str = "head") -> UpgradeResult:
    """Migrate the store at ``url`` to ``revision`` (the newest by default).

    One transaction holds the whole upgrade and the store's lock for it (see the module doc),
    and the revisions before and after are read inside it: of two processes upgrading at
    once, the second waits, finds the store migrated and reports nothing changed.
    """
    from alembic import command  # noqa: PLC0415 - see the imports

    config = alembic_config()
    with engine_for(url).begin() as connection:
        if connection.dialect.name == "postgresql":
            # Alembic's own version table is created without a lock: two upgrades racing on
            # an empty database would both create it. The lock is released at commit.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        before = current_revision_on(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        after = current_revision_on(connection)
    return UpgradeResult(before, after)


def is_current(url: str) -> bool:
    """True when the store at ``url`` is at the newest revision."""
    return current_revision(url) == head_revision()
