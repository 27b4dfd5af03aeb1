"""A feed's parsed events into the store, and the feed's sync state (the store side).

:func:`apply_feed` makes the stored events of one feed equal to the feed's: new keys are
inserted, changed ones updated, unchanged ones (same ``content_hash``) not written at all, and
keys the feed no longer has deleted. Run twice with the same events, the second run writes no
event (idempotent). :func:`record_not_modified` and :func:`record_failure` touch only the feed
row: a 304 or a failed sync keeps every stored event.

Each function works inside the caller's session (one transaction per feed: see runner.py) and
first locks the feed's row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite every
transaction already holds the write lock, store/engine.py), so two workers syncing the same
feed at once take turns instead of inserting the same event twice. Plain SQLAlchemy: the same
code on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from personal_assistant.workers.calendar_sync.parse import FeedEvent
from personal_assistant.workers.store.calendar_models import CalendarEvent, CalendarFeed

# A feed row's last_status: synced (events applied), unchanged (304), failed (events kept).
STATUS_OK = "ok"
STATUS_NOT_MODIFIED = "not_modified"
STATUS_ERROR = "error"
# last_error is for people: the first line of an error, not a parser's dump.
LAST_ERROR_MAX_CHARS = 1000
# Rows deleted per statement: far below SQLite's and PostgreSQL's bound-parameter limits.
DELETE_BATCH = 500


@dataclass(frozen=True)
class SyncCounts:
    """What one sync did to a feed's stored events."""

    upserted: int
    removed: int
    unchanged: int


def apply_feed(
    session: Session,
    feed_name: str,
    events: Iterable[FeedEvent],
    *,
    etag: str | None,
    last_modified: str | None,
    now: datetime,
) -> SyncCounts:
    """Make the stored events of ``feed_name`` those of ``events``; remember the validators."""
    feed = locked_feed(session, feed_name)
    stored = {
        (row.uid, row.recurrence_id): row
        for row in session.scalars(select(CalendarEvent).where(CalendarEvent.feed_id == feed.id))
    }
    upserted = unchanged = kept = 0
    for event in events:
        row = stored.pop(event.key, None)
        kept += 1
        if row is None:
            session.add(CalendarEvent(feed_id=feed.id, updated_at=now, **_columns(event)))
            upserted += 1
        elif row.content_hash == event.content_hash:
            unchanged += 1
        else:
            for name, value in _columns(event).items():
                setattr(row, name, value)
            row.updated_at = now
            upserted += 1
    gone = [row.id for row in stored.values()]
    for start in range(0, len(gone), DELETE_BATCH):
        batch = gone[start : start + DELETE_BATCH]
        session.execute(delete(CalendarEvent).where(CalendarEvent.id.in_(batch)))
    feed.etag, feed.last_modified = etag, last_modified
    feed.last_synced_at = feed.last_attempt_at = now
    feed.last_status, feed.last_error = STATUS_OK, None
    feed.event_count = kept
    return SyncCounts(upserted=upserted, removed=len(gone), unchanged=unchanged)


def record_not_modified(
    session: Session,
    feed_name: str,
    *,
    etag: str | None,
    last_modified: str | None,
    now: datetime,
) -> None:
    """The feed answered 304: its events are current; keep the (possibly renewed) validators."""
    feed = locked_feed(session, feed_name)
    feed.etag, feed.last_modified = etag, last_modified
    feed.last_synced_at = feed.last_attempt_at = now
    feed.last_status, feed.last_error = STATUS_NOT_MODIFIED, None


def record_failure(
    session: Session, feed_name: str, reason: str, message: str, now: datetime
) -> None:
    """The sync failed: keep the events and validators, note the error and when it happened."""
    feed = locked_feed(session, feed_name)
    feed.last_attempt_at = now
    feed.last_status = STATUS_ERROR
    feed.last_error = f"{reason}: {message}"[:LAST_ERROR_MAX_CHARS]


def feed_validators(session: Session, feed_name: str) -> tuple[str | None, str | None]:
    """The ETag and Last-Modified of the feed's last good sync (None, None if never synced)."""
    row = session.execute(
        select(CalendarFeed.etag, CalendarFeed.last_modified).where(CalendarFeed.name == feed_name)
    ).first()
    return (row.etag, row.last_modified) if row is not None else (None, None)


def locked_feed(session: Session, feed_name: str) -> CalendarFeed:
    """The feed's row, created if new, locked until the session's transaction ends."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Insert-if-absent in one statement: two first syncs of a feed at once both succeed.
    session.execute(
        insert(CalendarFeed)
        .values(name=feed_name, event_count=0)
        .on_conflict_do_nothing(index_elements=[CalendarFeed.name])
    )
    return session.scalars(
        select(CalendarFeed).where(CalendarFeed.name == feed_name).with_for_update()
    ).one()


def _columns(event: FeedEvent) -> dict[str, object]:
    """The event's stored columns (everything but the key's feed and the bookkeeping)."""
    return {
        "uid": event.uid,
        "recurrence_id": event.recurrence_id,
        "summary": event.summary,
        "description": event.description,
        "location": event.location,
        "starts_at": event.starts_at,
        "ends_at": event.ends_at,
        "all_day": event.all_day,
        "rrule": event.rrule,
        "status": event.status,
        "sequence": event.sequence,
        "content_hash": event.content_hash,
    }
