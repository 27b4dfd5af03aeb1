"""The e-mail outbox table: one row per message, from enqueue to sent or failed.

States: ``pending`` (waiting for ``next_attempt_at``), ``sending`` (claimed by a worker until
``lease_expires_at``; claimable again after it, which is how a dead worker's messages come
back), ``sent`` and ``failed`` (final). ``message_id`` is the Message-ID header, fixed at
enqueue, so a message sent twice (a worker dying between the server's "250 OK" and the row's
update) carries the same id both times and receivers can drop the copy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from personal_assistant.workers.store.base import Base, utcnow

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
EMAIL_STATES = (PENDING, SENDING, SENT, FAILED)


class OutboxMessage(Base):
    """One e-mail in the outbox."""

    __tablename__ = "email_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    sender: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]]
    subject: Mapped[str] = mapped_column(String(998))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # The claim's scan: due pending messages and expired leases, oldest first.
        Index("ix_email_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )
