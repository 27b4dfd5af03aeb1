"""Calendar feeds and their events, as last synced.

A feed row is keyed by the feed's configured name (its URL, which may carry a private token,
stays in the settings) and remembers the validators of its last good response (ETag,
Last-Modified) for the next conditional GET, and the last error. An event is keyed by
(feed, UID, RECURRENCE-ID): the master of a recurring series has an empty recurrence id, each
modified occurrence its own row. ``content_hash`` lets a re-sync skip rows that did not change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from personal_assistant.workers.store.base import Base, utcnow


class CalendarFeed(Base):
    """One configured iCalendar feed and the state of its last sync."""

    __tablename__ = "calendar_feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    last_synced_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    event_count: Mapped[int] = mapped_column(default=0)


class CalendarEvent(Base):
    """One event (or one modified occurrence of a recurring event) of a feed."""

    __tablename__ = "calendar_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("calendar_feeds.id", ondelete="CASCADE"))
    uid: Mapped[str] = mapped_column(String(512))
    # "" for a single event or a series' master; else the occurrence's original start (ISO).
    recurrence_id: Mapped[str] = mapped_column(String(64), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(Text, default="")
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    all_day: Mapped[bool] = mapped_column(default=False)
    rrule: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="")
    sequence: Mapped[int] = mapped_column(default=0)
    content_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("feed_id", "uid", "recurrence_id"),)
