"""Fixtures of the store's tests: an empty store of each kind, and no engine left open after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from personal_assistant.workers.store.engine import dispose_all


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    """Close the engines a test made: the next test's store is another file or database."""
    yield
    dispose_all()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """An empty store of each kind: a new SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    return url
