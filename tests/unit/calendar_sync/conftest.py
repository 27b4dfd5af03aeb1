"""Fixtures of the calendar-sync tests: a loopback feed server (the stores are
tests/conftest.py's ``sqlite_store`` and ``any_store``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.ics_feeds import IcsFeedServer, ics_feed_server


@pytest.fixture
def feeds() -> Iterator[IcsFeedServer]:
    """An empty feed server on loopback (the test sets its replies)."""
    with ics_feed_server() as server:
        yield server
