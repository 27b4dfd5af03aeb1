"""Migrations: an empty store gets every model's table, again changes nothing, races are safe."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from personal_assistant.workers.store import ai_models, calendar_models, email_models
from personal_assistant.workers.store.base import Base
from personal_assistant.workers.store.calendar_models import CalendarFeed
from personal_assistant.workers.store.engine import dispose_all, engine_for, session_scope
from personal_assistant.workers.store.migrate import (
    current_revision,
    head_revision,
    is_current,
    upgrade,
)

# Every model module, so Base.metadata holds every table however the suite was collected.
MODEL_MODULES = (ai_models, calendar_models, email_models)
MODEL_TABLES = {"ai_jobs", "ai_runs", "calendar_feeds", "calendar_events", "email_outbox"}
# Exit codes of the upgrading children.
CHILD_OK = 0
CHILD_NOT_CURRENT = 10
CHILD_RAISED = 11


def _schema(url: str) -> dict[str, Any]:
    """Tables, columns, indexes, unique and foreign keys, as the store reports them."""
    inspector = inspect(engine_for(url))  # a new inspector: each caches what it read
    return {
        table: {
            "columns": [
                (col["name"], str(col["type"]), col["nullable"])
                for col in inspector.get_columns(table)
            ],
            "indexes": sorted(str(index) for index in inspector.get_indexes(table)),
            "unique": sorted(str(unique) for unique in inspector.get_unique_constraints(table)),
            "foreign": sorted(str(fk) for fk in inspector.get_foreign_keys(table)),
        }
        for table in sorted(inspector.get_table_names())
    }


def _version_rows(url: str) -> list[str]:
    with session_scope(url) as session:
        return list(session.scalars(text("SELECT version_num FROM alembic_version")))


def test_the_models_are_the_five_domain_tables() -> None:
    assert all(module.Base is Base for module in MODEL_MODULES)
    assert set(Base.metadata.tables) == MODEL_TABLES


def test_an_upgrade_of_an_empty_store_creates_every_models_table(store_url: str) -> None:
    assert current_revision(store_url) is None
    assert not is_current(store_url)

    result = upgrade(store_url)

    assert (result.before, result.after, result.changed) == (None, head_revision(), True)
    assert current_revision(store_url) == head_revision()
    assert is_current(store_url)
    schema = _schema(store_url)
    assert set(schema) == MODEL_TABLES | {"alembic_version"}
    for name, table in Base.metadata.tables.items():
        assert [column[0] for column in schema[name]["columns"]] == list(table.columns.keys())


def test_a_second_upgrade_changes_nothing_and_keeps_the_rows(store_url: str) -> None:
    upgrade(store_url)
    with session_scope(store_url) as session:
        session.add(CalendarFeed(name="work"))
    schema = _schema(store_url)

    again = upgrade(store_url)

    assert (again.before, again.after, again.changed) == (head_revision(), head_revision(), False)
    assert _schema(store_url) == schema
    assert _version_rows(store_url) == [head_revision()]
    with session_scope(store_url) as session:
        assert session.scalar(select(func.count()).select_from(CalendarFeed)) == 1


def test_the_migrations_build_exactly_the_models_schema(store_url: str) -> None:
    upgrade(store_url)

    with engine_for(store_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def _upgrade_in_two_processes_at_once(url: str, tmp_path: Path) -> None:
    """Fork two processes that upgrade ``url`` at the same moment; both must succeed."""
    go_read, go_write = os.pipe()
    pids = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a child; it reports through its exit code
            code = CHILD_RAISED
            try:
                os.close(go_write)
                os.read(go_read, 1)  # both wait here, then upgrade at the same moment
                result = upgrade(url)
                (tmp_path / f"child{n}.changed").write_text(str(result.changed))
                code = CHILD_OK if is_current(url) else CHILD_NOT_CURRENT
            except BaseException:
                (tmp_path / f"child{n}.err").write_text(traceback.format_exc())
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(go_read)
    os.write(go_write, b"go")
    os.close(go_write)

    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]

    errors = "\n".join(p.read_text() for p in sorted(tmp_path.glob("child*.err")))
    assert codes == [CHILD_OK, CHILD_OK], errors or f"exit codes {codes}"
    # The second waited for the first's lock and found nothing left to do.
    changed = sorted(p.read_text() for p in tmp_path.glob("child*.changed"))
    assert changed == ["False", "True"]


def test_two_processes_upgrading_one_store_at_once_both_succeed_one_migrates(
    store_url: str, tmp_path: Path
) -> None:
    url = store_url
    dispose_all()  # the children must not inherit a pooled connection of this process

    _upgrade_in_two_processes_at_once(url, tmp_path)

    assert is_current(url)
    assert _version_rows(url) == [head_revision()]
    assert set(_schema(url)) == MODEL_TABLES | {"alembic_version"}
