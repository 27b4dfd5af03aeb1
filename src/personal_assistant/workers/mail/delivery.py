"""Claimed messages sent over one SMTP session, each marked in the store as soon as it is done.

:class:`OutboxDelivery` is what both e-mail tasks run: claim (a batch, or one message), send
each message on the session, and right after each reply commit the message's new state in its
own short transaction (marks.py says why that bounds duplicates). Per message:

- accepted: ``sent`` (recipients refused alongside others are noted in ``last_error``);
- a 4xx reply, a broken connection, a timeout, or any unexpected error: deferred with backoff,
  ``failed`` once out of attempts;
- a 5xx reply, or content that cannot be built: ``failed`` at once;
- not tried (the connection could not be opened again, or the lease is about to run out):
  released, its attempt not counted.

Every final failure is handed to ``on_failed`` (the tasks write a dead letter with the server's
reply). A message never stops the batch; a store that cannot be written does (the marks would
be lost, so sending on would only make duplicates), and so does a connection that cannot be
opened again, after the untried messages are released.

No Celery here: the tasks hand in the settings, the session and the callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection

from personal_assistant.workers.config.domain_settings import DomainSettings
from personal_assistant.workers.constants import EMAIL_RETRY_BASE_S, EMAIL_RETRY_MAX_S
from personal_assistant.workers.mail import marks, outbox
from personal_assistant.workers.mail.message import MailError
from personal_assistant.workers.mail.outbox import ClaimedMessage
from personal_assistant.workers.mail.smtp_sender import (
    Delivery,
    Outcome,
    SmtpSession,
    SmtpSetupError,
    SmtpUnavailable,
)
from personal_assistant.workers.store.base import utcnow
from personal_assistant.workers.store.email_models import FAILED, PENDING
from personal_assistant.workers.store.engine import engine_for, session_scope

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class OutboxPolicy:
    """Batch size, lease and retry schedule: the EMAIL_* settings."""

    batch_size: int
    lease_seconds: float
    max_attempts: int
    retry_base: float = EMAIL_RETRY_BASE_S
    retry_max: float = EMAIL_RETRY_MAX_S
    #: A message is not started with less of its lease left than this: one SMTP exchange may
    #: take up to the timeout, and a message sent after its lease ran out may be sent twice.
    lease_margin: float = 0.0

    @classmethod
    def from_settings(cls, settings: DomainSettings) -> OutboxPolicy:
        """The policy of EMAIL_BATCH_SIZE, EMAIL_LEASE_SECONDS, EMAIL_MAX_ATTEMPTS and
        SMTP_TIMEOUT (the margin: one timeout, at most half the lease)."""
        return cls(
            batch_size=settings.email_batch_size,
            lease_seconds=settings.email_lease_seconds,
            max_attempts=settings.email_max_attempts,
            lease_margin=min(settings.smtp_timeout, settings.email_lease_seconds / 2),
        )


@dataclass
class DeliveryReport:
    """What a run did, message by message, added up."""

    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    #: Claimed but not tried: back in the queue, their attempt not counted.
    released: int = 0
    #: Done, but the claim had been taken over when the result was written (see outbox.py).
    lost_claims: int = 0

    def add(self, other: DeliveryReport) -> None:
        """Add ``other``'s counts to this report."""
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        """The counts, for a task's result."""
        return asdict(self)


@dataclass(frozen=True)
class FinalFailure:
    """A message that failed for good: the server's reply code (if any) and why."""

    message: ClaimedMessage
    code: int | None
    reason: str


class StoreWriteError(RuntimeError):
    """A message's result could not be written to the store: the batch stops there."""


class OutboxDelivery:
    """Claims from the store at ``store_url`` and sends on ``smtp`` (see the module doc)."""

    def __init__(
        self,
        store_url: str,
        smtp: SmtpSession,
        policy: OutboxPolicy,
        *,
        on_failed: Callable[[FinalFailure], None] = lambda failure: None,
        on_progress: Callable[[DeliveryReport], None] = lambda report: None,
    ) -> None:
        self.store_url = store_url
        self.smtp = smtp
        self.policy = policy
        self.on_failed = on_failed
        self.on_progress = on_progress
        # Set by deliver() for its batch: the connection the marks use, and the sent-mark on it.
        self._connection: Connection | None = None
        self._mark_sent: Callable[[ClaimedMessage, str], bool] | None = None

    # -- claims ------------------------------------------------------------------------------
    def due(self) -> int:
        """How many messages could be claimed now."""
        with session_scope(self.store_url) as session:
            return outbox.due_count(session)

    def claim_batch(self) -> list[ClaimedMessage]:
        """Claim up to a batch of due messages (committed before anything is sent)."""
        with session_scope(self.store_url) as session:
            return outbox.claim_batch(
                session, limit=self.policy.batch_size, lease_seconds=self.policy.lease_seconds
            )

    def claim_one(self, outbox_id: int) -> ClaimedMessage | None:
        """Claim message ``outbox_id`` if it is due and unclaimed."""
        with session_scope(self.store_url) as session:
            return outbox.claim_one(session, outbox_id, lease_seconds=self.policy.lease_seconds)

    # -- sending -----------------------------------------------------------------------------
    def deliver(
        self, messages: Sequence[ClaimedMessage], report: DeliveryReport | None = None
    ) -> DeliveryReport:
        """Send ``messages`` (claimed by this worker) one by one, marking each as it is done.

        The counts go to ``report`` (a new one by default), which holds what was done also
        when this raises.

        Raises SmtpUnavailable or SmtpSetupError when the connection cannot be opened (again),
        after releasing the messages not tried; StoreWriteError when a result cannot be
        written (the untried messages come back when their lease expires).
        """
        report = report if report is not None else DeliveryReport()
        report.claimed += len(messages)
        # One connection for the batch's marks, each in its own transaction: checking a
        # connection out of the pool per message cost as much as the mark itself.
        with engine_for(self.store_url).connect() as connection:
            self._connection = connection
            self._mark_sent = marks.sent_marker(connection)
            try:
                self._deliver(messages, report)
            finally:
                self._connection = self._mark_sent = None
        return report

    def _deliver(self, messages: Sequence[ClaimedMessage], report: DeliveryReport) -> None:
        for index, message in enumerate(messages):
            if utcnow() > message.lease_expires_at - timedelta(seconds=self.policy.lease_margin):
                report.released += self._release(messages[index:])
                logger.warning(
                    "e-mail batch stopped with %d message(s) left: their lease is running out",
                    len(messages) - index,
                )
                break
            try:
                built = message.build()
                sender = message.envelope_sender
            except MailError as exc:
                self._fail(message, None, f"cannot be built: {exc}", report)
                continue
            except Exception as exc:
                logger.exception("e-mail %s: unexpected error while building", message.message_id)
                self._defer(message, f"{type(exc).__name__}: {exc}", report)
                continue
            try:
                delivery = self.smtp.send(built, sender, message.content.recipients)
            except (SmtpUnavailable, SmtpSetupError):
                # The connection could not be opened again: nothing more goes out now.
                report.released += self._release(messages[index:])
                raise
            except Exception as exc:
                # A bug or a surprise in one message must not stop the others.
                logger.exception("e-mail %s: unexpected error while sending", message.message_id)
                self._defer(message, f"{type(exc).__name__}: {exc}", report)
                continue
            self._record(message, delivery, report)
            self.on_progress(report)

    def _record(self, message: ClaimedMessage, delivery: Delivery, report: DeliveryReport) -> None:
        if delivery.outcome is Outcome.SENT:
            note = ""
            if delivery.refused:
                note = "sent; refused by the server for: " + "; ".join(
                    f"{address}: {reply}" for address, reply in delivery.refused.items()
                )
                logger.warning("e-mail %s %s", message.message_id, note)
            mark_sent = self._mark_sent
            assert mark_sent is not None, "marks happen inside deliver()"
            if self._write(message, lambda: mark_sent(message, note)):
                report.sent += 1
            else:
                report.lost_claims += 1
                logger.warning(
                    "e-mail %s was sent, but its lease had been taken over: it may be sent "
                    "twice (same Message-ID)",
                    message.message_id,
                )
        elif delivery.outcome is Outcome.DEFERRED:
            self._defer(message, delivery.reply, report)
        else:
            self._fail(message, delivery.code, delivery.reply, report)

    def _defer(self, message: ClaimedMessage, error: str, report: DeliveryReport) -> None:
        policy = self.policy
        status = self._mark(
            marks.defer,
            message,
            error,
            max_attempts=policy.max_attempts,
            base=policy.retry_base,
            maximum=policy.retry_max,
        )
        if status == PENDING:
            report.deferred += 1
            logger.info(
                "e-mail %s deferred (attempt %d of %d): %s",
                message.message_id,
                message.attempts,
                policy.max_attempts,
                error,
            )
        elif status == FAILED:
            report.failed += 1
            reason = f"gave up after {message.attempts} attempts; last: {error}"
            self._final(FinalFailure(message, None, reason))
        else:
            report.lost_claims += 1

    def _fail(
        self, message: ClaimedMessage, code: int | None, reply: str, report: DeliveryReport
    ) -> None:
        if self._mark(marks.fail, message, reply):
            report.failed += 1
            self._final(FinalFailure(message, code, reply))
        else:
            report.lost_claims += 1

    def _final(self, failure: FinalFailure) -> None:
        logger.error(
            "e-mail %s to %s failed for good: %s",
            failure.message.message_id,
            ", ".join(failure.message.content.recipients),
            failure.reason,
        )
        try:
            self.on_failed(failure)
        except Exception:
            logger.exception("e-mail %s: could not report the failure", failure.message.message_id)

    def _mark(
        self, mark: Callable[..., Any], message: ClaimedMessage, *args: Any, **kw: Any
    ) -> Any:
        """Run one outbox mark in its own transaction, committed before the next message."""
        connection = self._connection
        assert connection is not None, "marks happen inside deliver()"

        def in_transaction() -> Any:
            with connection.begin():
                return mark(connection, message, *args, **kw)

        return self._write(message, in_transaction)

    def _write(self, message: ClaimedMessage, write: Callable[[], _T]) -> _T:
        try:
            return write()
        except Exception as exc:
            raise StoreWriteError(
                f"e-mail {message.message_id}: its result could not be written to the store "
                f"({type(exc).__name__}: {exc}); the batch stops so that nothing else is sent "
                "unrecorded"
            ) from exc

    def _release(self, messages: Sequence[ClaimedMessage]) -> int:
        if not messages:
            return 0
        with session_scope(self.store_url) as session:
            return marks.release(session, messages)
