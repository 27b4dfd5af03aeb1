"""The e-mail outbox's API for the backend (:func:`enqueue_email`) and its beat entry.

Messages are sent as soon as they are enqueued (``enqueue_email`` publishes ``send_email``);
the beat's sweep every five minutes (the seed's) sends what is due later: messages with
``send_after``, deferred retries, and the messages of a worker that died holding their lease.

The outbox lives in the store (DATABASE_URL, else SQLite under DATA_DIR), which must be
migrated first: ``celery -A personal_assistant.workers.celery_app db upgrade``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from celery.schedules import crontab
from celery.utils.imports import symbol_by_name
from sqlalchemy.exc import OperationalError, ProgrammingError

from personal_assistant.workers.config import WorkerSettings, mask_url
from personal_assistant.workers.constants import TASKS_PACKAGE
from personal_assistant.workers.mail import outbox
from personal_assistant.workers.schedulers.base_scheduler import PeriodicTask
from personal_assistant.workers.store.base import utcnow
from personal_assistant.workers.store.engine import session_scope
from personal_assistant.workers.store.migrate import is_current

logger = logging.getLogger(__name__)

SEND_EMAIL_TASK = f"{TASKS_PACKAGE}.email_tasks.send_email"

# The deployment's app, loaded by name when enqueue_email is called without one. Not imported:
# celery_config imports this module for EMAIL_SCHEDULE, so an import of the composition root
# here (even inside the function, even for typing) would close an import cycle
# celery_config -> email_scheduler -> celery_app -> app -> worker_app -> celery_config.
DEPLOYMENT_APP = "personal_assistant.workers.celery_app:app"


class OutboxApp(Protocol):
    """What enqueue_email needs of an app (a WorkerApp): its settings, and publishing."""

    settings: WorkerSettings

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Publish task ``name``."""


EMAIL_SCHEDULE: tuple[PeriodicTask, ...] = (
    PeriodicTask(
        name="process-email-queue",
        task=f"{TASKS_PACKAGE}.email_tasks.process_email_queue",
        schedule=crontab(minute="*/5"),
        options={"priority": 5},
        # A sweep publishes send_email for each due message; while the e-mail queue already
        # holds more than this, another sweep adds nothing the workers can take.
        max_queue_depth=500,
    ),
)


class StoreNotMigrated(RuntimeError):
    """The store has no outbox table yet: run ``celery ... db upgrade``."""


def enqueue_email(  # noqa: PLR0917 - the issue's signature: (to, subject, text, html, ...)
    to: str | Sequence[str],
    subject: str,
    text: str,
    html: str | None = None,
    headers: dict[str, str] | None = None,
    send_after: datetime | None = None,
    *,
    app: OutboxApp | None = None,
) -> str:
    """Put an e-mail in the outbox and have it sent; returns its Message-ID.

    ``to`` is one address or a list (at most 100); ``html`` an optional HTML alternative of
    ``text``; ``headers`` extra headers (Reply-To, List-Unsubscribe, X-...; never From, To,
    Cc, Bcc, Subject, Date or Message-ID); ``send_after`` a timezone-aware time before which it
    is not sent. The From is EMAIL_FROM. Bad input raises a ``MailError`` (a ValueError) saying
    which, and nothing is stored.

    The message is committed to the outbox first, then (when due now) ``send_email`` is
    published for it. If publishing fails the message is not lost: the sweep sends it. Delivery
    is at least once: see the README on the Message-ID. ``app`` defaults to the deployment's
    (``personal_assistant.workers.celery_app``), whose settings name the store.
    """
    if app is None:
        # Loaded when called, not at import: importing this module must not build the app.
        app = symbol_by_name(DEPLOYMENT_APP)
    settings = app.settings
    url = settings.store_url
    try:
        with session_scope(url) as session:
            row = outbox.enqueue(
                session,
                settings,
                to,
                subject,
                text,
                html=html,
                headers=headers,
                send_after=send_after,
            )
            outbox_id, message_id, due_at = row.id, row.message_id, row.next_attempt_at
    except (OperationalError, ProgrammingError) as exc:
        if not _not_migrated(url):
            raise
        raise StoreNotMigrated(
            f"the store at {mask_url(url)} is not migrated: run "
            "`celery -A personal_assistant.workers.celery_app db upgrade`"
        ) from exc
    if due_at <= utcnow():
        try:
            app.send_task(SEND_EMAIL_TASK, kwargs={"outbox_id": outbox_id})
        except Exception as exc:
            # Committed already: the sweep sends it within its interval.
            logger.warning(
                "e-mail %s stored, but send_email could not be published (%s: %s); the "
                "outbox sweep will send it",
                message_id,
                type(exc).__name__,
                exc,
            )
    return message_id


def _not_migrated(url: str) -> bool:
    """True when the store answers and is behind the package's migrations."""
    try:
        return not is_current(url)
    except Exception:  # unreachable: the original error says more
        return False
