"""Fixtures of the alerting tests: loopback HTTP endpoints, a healthy one and a silent one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.alert_channels import BlackHole, HttpReceiver


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    yield server
    server.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()
