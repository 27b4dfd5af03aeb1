"""Fixtures of the broker tests: kombu connections on the reliable transport."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu.connection import Connection

from personal_assistant.workers.broker import transport
from personal_assistant.workers.broker.priority import PRIORITY_STEPS
from personal_assistant.workers.broker.transport import ReliableRedisTransport

OPTIONS: dict[str, Any] = {
    "queue_order_strategy": "priority",
    "priority_steps": PRIORITY_STEPS,
    "visibility_timeout": 60,
    "consumer_dead_after": 2,
    "max_message_bytes": 4096,
}

Connect = Callable[..., Any]


def close(conn: Any) -> None:
    """Release ``conn`` (once)."""
    if not conn._closed:
        conn.release()


@pytest.fixture
def connect(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Connect]:
    """Open kombu connections on the reliable transport; all are closed after the test."""
    # Consumers this process "lost" are remembered per process: start each test with none.
    monkeypatch.setattr(transport, "_ABANDONED", set())
    opened: list[Any] = []

    def open_connection(**options: Any) -> Any:
        conn = Connection(
            redis_url, transport=ReliableRedisTransport, transport_options={**OPTIONS, **options}
        )
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        close(conn)
