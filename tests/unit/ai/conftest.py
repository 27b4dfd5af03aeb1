"""Fixtures of the AI tests: no engine left open after a test (the stores are tests/conftest.py's
``sqlite_store`` and ``any_store``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from personal_assistant.workers.store.engine import dispose_all


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    """Close the engines a test made: the next test's store is another file or database."""
    yield
    dispose_all()
