"""Tasks of the email domain (queue ``email_tasks``): the SMTP e-mail outbox.

- ``send_email(outbox_id)``: sends one message right after ``enqueue_email`` stored it.
- ``process_email_queue()``: the beat's sweep; sends what is due in batches over one SMTP
  connection: messages held until ``send_after``, deferred retries, and the messages of a
  worker that died holding their lease.

The messages live in the store (mail/outbox.py); both tasks send only what their own claim
took, mark each message right after the server's reply, and write a dead letter (with the
server's reply) for each message that fails for good. With SMTP_HOST or EMAIL_FROM unset, a
task with nothing to send succeeds and says what is not configured; one with mail to send
fails at once naming the variables, and leaves the mail untouched in the outbox.

Routed by module name (see routing.py); only workers consuming ``email_tasks`` run them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Final

from sqlalchemy.exc import OperationalError, ProgrammingError

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import app
from personal_assistant.workers.config import mask_url
from personal_assistant.workers.dead_letters.queue import DeadLetter
from personal_assistant.workers.errors import PermanentError
from personal_assistant.workers.mail import outbox
from personal_assistant.workers.mail.delivery import (
    DeliveryReport,
    FinalFailure,
    OutboxDelivery,
    OutboxPolicy,
)
from personal_assistant.workers.mail.smtp_sender import (
    SmtpConfig,
    SmtpSession,
    SmtpSetupError,
    SmtpUnavailable,
)
from personal_assistant.workers.metrics.domain_series import (
    EMAIL_DEFERRED,
    EMAIL_FAILED,
    EMAIL_SENT,
)
from personal_assistant.workers.store.email_models import FAILED, PENDING
from personal_assistant.workers.store.engine import session_scope
from personal_assistant.workers.store.migrate import is_current
from personal_assistant.workers.tasks.base_tasks import BaseTask, dead_letter_queue

logger = logging.getLogger(__name__)

# A sweep stops claiming new batches after this long and leaves the rest to the next sweep:
# below the beat's five-minute interval, so sweeps do not pile up behind a slow server.
SWEEP_BUDGET_S: Final = 240.0


class OutboxTask(BaseTask):
    """Base of the e-mail tasks."""

    # Sending is not idempotent: running a send twice would send two copies. The outbox
    # guards it instead: a message is sent only by the run whose atomic claim took it (a
    # lease), so a redelivered or replayed task finds its message sent or held and sends
    # nothing. The one exception is a worker dying between the server's "250 OK" and the
    # commit of "sent" (milliseconds): that message goes out again with the same Message-ID.
    idempotent: ClassVar[bool] = False


# What sending needs. EMAIL_FROM is needed to enqueue (a stored message carries its From), so
# its absence is reported but stops no send.
SEND_NEEDS: Final = ("SMTP_HOST",)


def _not_configured(task: BaseTask) -> list[str]:
    """The e-mail variables not set (as /readyz reports them)."""
    return task.settings.missing_settings().get("email", [])


def _cannot_send(missing: list[str]) -> list[str]:
    return [name for name in missing if name in SEND_NEEDS]


def _store_error(url: str, exc: Exception) -> Exception:
    """A clear error for a store that is not migrated; else ``exc`` itself."""
    try:
        migrated = is_current(url)
    except Exception:
        return exc
    if migrated:
        return exc
    return PermanentError(
        f"the store at {mask_url(url)} is not migrated: run "
        "`celery -A personal_assistant.workers.celery_app db upgrade`"
    )


def _dead_letter(task: BaseTask, failure: FinalFailure) -> None:
    """Write a final failure to the dead-letter queue, replayable as a deliberate re-send."""
    message = failure.message
    letter = DeadLetter(
        task_name=send_email.name,
        task_id=str(task.request.id or f"outbox-{message.id}"),
        args=[],
        kwargs={"outbox_id": message.id, "resend_failed": True},
        exception_type="EmailRejected" if failure.code else "EmailFailed",
        exception=(
            f"e-mail {message.message_id} (outbox {message.id}) to "
            f"{', '.join(message.content.recipients)}: {failure.reason}"
        ),
        traceback="",
        queue=c.EMAIL_QUEUE,
        retries=message.attempts,
        hostname=task.request.hostname,
    )
    dead_letter_queue(task.settings).add(letter)


def _count(task: BaseTask, report: DeliveryReport) -> None:
    metrics = task.app.domain_metrics
    metrics.count(EMAIL_SENT, amount=report.sent)
    metrics.count(EMAIL_DEFERRED, amount=report.deferred)
    metrics.count(EMAIL_FAILED, amount=report.failed)


def _delivery(task: BaseTask, smtp: SmtpSession) -> OutboxDelivery:
    settings = task.settings
    return OutboxDelivery(
        settings.store_url,
        smtp,
        OutboxPolicy.from_settings(settings),
        on_failed=lambda failure: _dead_letter(task, failure),
    )


@app.task(base=OutboxTask, bind=True)
def send_email(self: OutboxTask, outbox_id: int, resend_failed: bool = False) -> dict[str, Any]:
    """Send outbox message ``outbox_id`` now if it is due and nobody holds it.

    ``resend_failed=True`` (how its dead letter replays) first makes a failed message pending
    again: an operator's deliberate re-send. A message already sent is never sent again. When
    the SMTP server cannot be reached the message stays in the outbox for the sweep.
    """
    if isinstance(outbox_id, bool) or not isinstance(outbox_id, int) or outbox_id < 1:
        raise PermanentError(f"outbox_id must be a positive integer, got {outbox_id!r}")
    if not isinstance(resend_failed, bool):
        raise PermanentError(f"resend_failed must be true or false, got {resend_failed!r}")
    settings = self.settings
    url = settings.store_url
    try:
        with session_scope(url) as session:
            status = outbox.status_of(session, outbox_id)
            if status is None:
                raise PermanentError(f"outbox message {outbox_id} does not exist")
            blocking = _cannot_send(_not_configured(self))
            if blocking and status in {PENDING, FAILED}:
                raise PermanentError(
                    f"outbox message {outbox_id} cannot be sent: {' and '.join(blocking)} "
                    "not set; it stays in the outbox"
                )
            if resend_failed and outbox.reset_failed(session, outbox_id):
                logger.info("e-mail outbox %d: failed message queued again", outbox_id)
    except (OperationalError, ProgrammingError) as exc:
        raise _store_error(url, exc) from exc
    result: dict[str, Any] = {"outbox_id": outbox_id, **DeliveryReport().as_dict()}
    with SmtpSession(SmtpConfig.from_settings(settings)) as smtp:
        delivery = _delivery(self, smtp)
        claimed = delivery.claim_one(outbox_id)
        if claimed is None:
            with session_scope(url) as session:
                result["status"] = outbox.status_of(session, outbox_id)
            return result
        result["message_id"] = claimed.message_id
        report = DeliveryReport()
        try:
            delivery.deliver([claimed], report)
        except (SmtpUnavailable, SmtpSetupError) as exc:
            # Nothing was sent and the message is back in the outbox, untouched: the sweep
            # sends it once the server answers (and fails itself, visibly, until then).
            logger.warning("e-mail %s left for the sweep: %s", claimed.message_id, exc)
            result.update(report.as_dict(), status=PENDING, error=str(exc))
            return result
        finally:
            _count(self, report)
    with session_scope(url) as session:
        result["status"] = outbox.status_of(session, outbox_id)
    result.update(report.as_dict())
    return result


@app.task(base=OutboxTask, bind=True)
def process_email_queue(self: OutboxTask) -> dict[str, Any]:
    """Send every due message, a batch per claim over one SMTP connection, for at most
    SWEEP_BUDGET_S; returns the counts (and ``not_configured`` when SMTP is not set up)."""
    settings = self.settings
    url = settings.store_url
    total = DeliveryReport()
    started = time.monotonic()
    with SmtpSession(SmtpConfig.from_settings(settings)) as smtp:
        delivery = _delivery(self, smtp)
        try:
            due = delivery.due()
        except (OperationalError, ProgrammingError) as exc:
            raise _store_error(url, exc) from exc
        missing = _not_configured(self)
        noted = {"not_configured": missing} if missing else {}
        blocking = _cannot_send(missing)
        if blocking and due:
            raise PermanentError(
                f"{due} e-mail(s) due but {' and '.join(blocking)} not set: they stay in the "
                "outbox until it is configured"
            )
        if not due:
            if missing:
                logger.info("e-mail outbox: nothing due; %s not set", " and ".join(missing))
            return {**total.as_dict(), **noted}
        # Connect before claiming: while the server is down nothing is claimed, and no
        # message spends an attempt on an outage that says nothing about it.
        smtp.open()
        while time.monotonic() - started < SWEEP_BUDGET_S:
            batch = delivery.claim_batch()
            if not batch:
                break
            report = DeliveryReport()
            try:
                delivery.deliver(batch, report)
            finally:
                # Counted also when the batch stops on an error: those messages are done.
                _count(self, report)
                total.add(report)
            self.report_progress(total.claimed, None, f"{total.sent} sent")
    logger.info(
        "e-mail outbox: %d sent, %d deferred, %d failed, %d released",
        total.sent,
        total.deferred,
        total.failed,
        total.released,
    )
    return {**total.as_dict(), **noted}


@app.task(base=BaseTask, bind=True)
def probe(self: BaseTask) -> dict[str, Any]:
    """Answer where it ran: proves end to end that this queue has a live worker."""
    return self.describe_execution()
