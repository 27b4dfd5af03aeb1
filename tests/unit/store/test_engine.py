"""Engines and sessions: driver URLs, SQLite's settings, fork safety, commit and rollback."""

from __future__ import annotations

import os
import sqlite3
import traceback
from pathlib import Path

import pytest
from sqlalchemy import Engine, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from personal_assistant.workers import constants as c
from personal_assistant.workers.store.engine import (
    dispose_all,
    driver_url,
    engine_for,
    is_sqlite,
    session_scope,
)

# Exit codes of the forked child, so the parent can say what went wrong.
CHILD_OK = 0
CHILD_GOT_PARENT_ENGINE = 10
CHILD_RAISED = 11
CHILD_MESSAGES = {
    CHILD_GOT_PARENT_ENGINE: "the child was handed the parent's engine",
    CHILD_RAISED: "the child raised (traceback in child.err)",
}


class _TestBase(DeclarativeBase):
    """Tables of these tests only, outside the models' metadata."""


class Note(_TestBase):
    """A row to write and read back."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(64))


def _with_notes(url: str) -> Engine:
    engine = engine_for(url)
    _TestBase.metadata.create_all(engine)
    return engine


def _notes(url: str) -> list[str]:
    with session_scope(url) as session:
        return sorted(session.scalars(select(Note.text)))


def _pooled_connection_identity(engine: Engine) -> object:
    """What identifies the connection the pool hands out: the server process on PostgreSQL."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        return id(connection.connection.dbapi_connection)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p%40ss@db:5432/app", "postgresql+psycopg://u:p%40ss@db:5432/app"),
        ("postgresql://u:secret@db/app", "postgresql+psycopg://u:secret@db/app"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
        ("sqlite:////var/lib/pa/assistant.db", "sqlite:////var/lib/pa/assistant.db"),
    ],
)
def test_driver_url_selects_psycopg_for_postgresql_and_keeps_the_rest(
    given: str, expected: str
) -> None:
    assert driver_url(given) == expected


def test_is_sqlite_tells_sqlite_from_postgresql() -> None:
    assert is_sqlite("sqlite:///x.db")
    assert not is_sqlite("postgres://u@db/app")
    assert not is_sqlite("postgresql+psycopg://u@db/app")


def test_a_sqlite_engine_creates_the_directory_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "store.db"

    with engine_for(f"sqlite:///{path}").connect() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        connection.commit()

    assert path.is_file()


def test_a_sqlite_engine_runs_wal_with_a_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    with engine_for(sqlite_url).connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar_one() == "wal"
        assert pragma("PRAGMA busy_timeout").scalar_one() == int(c.SQLITE_BUSY_TIMEOUT_S * 1000)
        assert pragma("PRAGMA foreign_keys").scalar_one() == 1


def test_a_sqlite_transaction_takes_the_write_lock_when_it_begins(sqlite_url: str) -> None:
    _with_notes(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")

    with session_scope(sqlite_url) as session:
        session.execute(select(Note))  # only a read so far
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


def test_the_same_process_and_url_share_one_engine(sqlite_url: str) -> None:
    assert engine_for(sqlite_url) is engine_for(sqlite_url)


def test_dispose_all_makes_the_next_engine_a_new_one(sqlite_url: str) -> None:
    first = engine_for(sqlite_url)
    dispose_all()
    assert engine_for(sqlite_url) is not first


def test_session_scope_commits_when_the_block_ends(store_url: str) -> None:
    _with_notes(store_url)

    with session_scope(store_url) as session:
        note = Note(text="kept")
        session.add(note)

    assert _notes(store_url) == ["kept"]
    assert note.text == "kept"  # still readable: objects do not expire at the commit


def test_session_scope_rolls_back_when_the_block_raises(store_url: str) -> None:
    _with_notes(store_url)

    with pytest.raises(RuntimeError, match="boom"), session_scope(store_url) as session:
        session.add(Note(text="lost"))
        session.flush()  # the row reached the store inside the transaction
        raise RuntimeError("boom")

    assert _notes(store_url) == []


def test_a_forked_child_gets_its_own_engine_and_the_parents_connection_keeps_working(
    store_url: str, tmp_path: Path
) -> None:
    engine = _with_notes(store_url)
    with session_scope(store_url) as session:
        session.add(Note(text="parent"))
    before = _pooled_connection_identity(engine)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; it reports through its exit code
        code = CHILD_RAISED
        try:
            if engine_for(store_url) is engine:
                code = CHILD_GOT_PARENT_ENGINE
            else:
                with session_scope(store_url) as session:
                    session.add(Note(text="child"))
                # Like a child that exits: it closes its own engines, and must not close
                # the connections it inherited (on PostgreSQL that would end the parent's).
                dispose_all()
                code = CHILD_OK
        except BaseException:
            (tmp_path / "child.err").write_text(traceback.format_exc())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    code = os.waitstatus_to_exitcode(status)
    assert code == CHILD_OK, CHILD_MESSAGES.get(code, f"child exit code {code}")
    assert engine_for(store_url) is engine
    assert _pooled_connection_identity(engine) == before
    assert _notes(store_url) == ["child", "parent"]
