"""One feed's sync from end to end: validators, fetch, parse, apply; never a half-applied feed.

Three short transactions, none held across the network: read the validators of the last good
sync; fetch and parse (no transaction: a slow feed must not hold SQLite's write lock); then
either apply the events together with the new validators, or record the failure. The
validators are stored only with the events they describe, so a 304 always means "what the
store holds is current".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from personal_assistant.workers.calendar_sync.apply import (
    STATUS_ERROR,
    STATUS_NOT_MODIFIED,
    STATUS_OK,
    SyncCounts,
    apply_feed,
    feed_validators,
    record_failure,
    record_not_modified,
)
from personal_assistant.workers.calendar_sync.errors import FeedError
from personal_assistant.workers.calendar_sync.fetch import fetch_feed
from personal_assistant.workers.calendar_sync.parse import parse_feed
from personal_assistant.workers.store.base import utcnow
from personal_assistant.workers.store.engine import session_scope

NOTHING = SyncCounts(upserted=0, removed=0, unchanged=0)


@dataclass(frozen=True)
class FeedOutcome:
    """How one feed's sync ended: ok, not_modified, or error (the stored events kept)."""

    name: str
    status: str
    counts: SyncCounts = NOTHING
    error: FeedError | None = None
    #: Events whose times had no zone and were taken as UTC.
    floating: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The feed's entry in the task's result (JSON)."""
        return {
            "status": self.status,
            "upserted": self.counts.upserted,
            "removed": self.counts.removed,
            "unchanged": self.counts.unchanged,
            "reason": self.error.reason if self.error else None,
            "error": str(self.error) if self.error else None,
        }


def sync_feed(
    client: httpx.Client,
    store_url: str,
    name: str,
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    now: Callable[[], datetime] = utcnow,
) -> FeedOutcome:
    """Sync the feed ``name`` at ``url`` into the store; a FeedError becomes an error outcome."""
    with session_scope(store_url) as session:
        etag, last_modified = feed_validators(session, name)
    try:
        fetched = fetch_feed(
            client,
            url,
            etag=etag,
            last_modified=last_modified,
            max_bytes=max_bytes,
            timeout=timeout,
        )
        events = [] if fetched.not_modified else parse_feed(fetched.body)
    except FeedError as exc:
        with session_scope(store_url) as session:
            record_failure(session, name, exc.reason, str(exc), now())
        return FeedOutcome(name, STATUS_ERROR, error=exc)
    with session_scope(store_url) as session:
        if fetched.not_modified:
            record_not_modified(
                session, name, etag=fetched.etag, last_modified=fetched.last_modified, now=now()
            )
            return FeedOutcome(name, STATUS_NOT_MODIFIED)
        counts = apply_feed(
            session,
            name,
            events,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            now=now(),
        )
    return FeedOutcome(
        name, STATUS_OK, counts, floating=sum(1 for event in events if event.floating)
    )
