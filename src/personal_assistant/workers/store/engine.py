"""Engines and sessions: one engine per process and URL, one session per unit of work.

A prefork worker forks its children from a main process: a connection (a socket) opened
before the fork would be shared by every child, and their queries would interleave on it.
So engines are made in the process that uses them and forgotten in a forked child
(``dispose(close=False)``: the child must not close what the parent still uses); tasks open a
session for each unit of work and close it before they return.

SQLite: WAL (readers never wait for the writer), a busy timeout instead of instant "database
is locked", and every transaction begins IMMEDIATE, taking the write lock up front: two
processes that read then write cannot deadlock, and a claim (select + update) is atomic.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import Session

from personal_assistant.workers import constants as c

# Store errors that may pass on their own, retried by the base task like Redis's: the server
# restarting or unreachable, a dropped connection, SQLite's lock held past the busy timeout.
# (A SQLite "no such table" is an OperationalError too; the domain tasks check the migration
# before they touch a table, so that one fails at once with "run db upgrade".)
STORE_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, DisconnectionError)

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
# Engines a forked child inherited: kept referenced, never closed (their sockets are the
# parent's), so garbage collection does not close them either.
_inherited: list[Engine] = []


def driver_url(url: str) -> str:
    """``url`` with the driver the package uses: psycopg 3 for PostgreSQL, pysqlite."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_file(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


# How often a connection tries again to switch a new database to WAL while another holds it.
_WAL_RETRY_S: Final = 0.05


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode (persistent: only a new database changes). Switching takes
    an exclusive lock, and SQLite answers "database is locked" to it at once, busy timeout or
    not, when another connection holds one: two processes opening a fresh store together (two
    workers of a new deployment, two `db upgrade`s) meet that. So: try again until the busy
    timeout, as any other statement waits."""
    deadline = time.monotonic() + c.SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_RETRY_S)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would BEGIN (deferred) lazily; ours begins below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(c.SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _use_wal(cursor)
        # WAL + NORMAL: a commit is durable once checkpointed, never corrupt; no fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def engine_for(url: str) -> Engine:
    """This process's engine for ``url`` (made on first use; a SQLite file's directory too)."""
    with _lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        real = driver_url(url)
        if is_sqlite(real):
            path = _sqlite_file(real)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            # pysqlite's own wait for a lock, for the statements before the PRAGMA above runs.
            engine = create_engine(real, connect_args={"timeout": c.SQLITE_BUSY_TIMEOUT_S})
            _configure_sqlite(engine)
        else:
            # pre_ping: a connection PostgreSQL dropped (a restart, an idle timeout) is replaced
            # before a task uses it, instead of failing that task.
            engine = create_engine(real, pool_pre_ping=True, pool_size=2, max_overflow=3)
        _engines[url] = engine
        return engine


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session in a transaction: committed when the block ends, rolled back if it raises."""
    with Session(engine_for(url), expire_on_commit=False) as session, session.begin():
        yield session


def dispose_all() -> None:
    """Close every engine of this process (tests, and a process that is about to exit)."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


def _forget_in_child() -> None:
    global _lock  # noqa: PLW0603 - a fresh lock: the parent's may have been held at the fork
    _lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)
        _inherited.append(engine)
    _engines.clear()


os.register_at_fork(after_in_child=_forget_in_child)
