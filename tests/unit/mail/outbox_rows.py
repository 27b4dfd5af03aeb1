"""Outbox rows for the store tests: added through ``outbox.enqueue``, claimed, read back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from personal_assistant.workers.config import load_settings
from personal_assistant.workers.config.domain_settings import DomainSettings
from personal_assistant.workers.mail import outbox
from personal_assistant.workers.store.email_models import OutboxMessage
from personal_assistant.workers.store.engine import session_scope

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE = 60.0


def settings() -> DomainSettings:
    return load_settings(email_from="Assistant <assistant@example.org>")


def add(url: str, count: int = 1, *, now: datetime = T0, **kwargs: Any) -> list[int]:
    ids = []
    with session_scope(url) as session:
        for n in range(count):
            row = outbox.enqueue(
                session, settings(), f"user{n}@example.org", f"s{n}", "body", now=now, **kwargs
            )
            ids.append(row.id)
    return ids


def row(url: str, outbox_id: int) -> OutboxMessage:
    with session_scope(url) as session:
        found = session.get(OutboxMessage, outbox_id)
        assert found is not None
        return found


def claim(url: str, limit: int = 10, now: datetime = T0) -> list[outbox.ClaimedMessage]:
    with session_scope(url) as session:
        return outbox.claim_batch(session, limit=limit, lease_seconds=LEASE, now=now)
