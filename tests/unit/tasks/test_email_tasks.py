"""The e-mail tasks run in this process against a real SMTP server (aiosmtpd), a SQLite store
and the private Redis (dead letters, domain counters): the sweep sends what is due over one
connection, fails 5xx rejections at once with a replayable dead letter, defers 4xx replies,
and with SMTP not configured it succeeds when idle and fails clearly when mail waits;
``enqueue_email`` stores a message and publishes ``send_email`` for it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.utils.imports import symbol_by_name
from sqlalchemy import select, update

from personal_assistant.workers import constants as c
from personal_assistant.workers.app import WorkerApp
from personal_assistant.workers.celery_app import app as deployment_app
from personal_assistant.workers.dead_letters.queue import DeadLetterQueue
from personal_assistant.workers.errors import PermanentError
from personal_assistant.workers.mail import outbox
from personal_assistant.workers.mail.message import MailError
from personal_assistant.workers.mail.smtp_sender import SmtpUnavailable
from personal_assistant.workers.metrics.domain_counters import read_domain_counts
from personal_assistant.workers.metrics.domain_series import (
    EMAIL_DEFERRED,
    EMAIL_FAILED,
    EMAIL_SENT,
)
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.schedulers.email_scheduler import (
    DEPLOYMENT_APP,
    SEND_EMAIL_TASK,
    StoreNotMigrated,
    enqueue_email,
)
from personal_assistant.workers.store.email_models import (
    FAILED,
    PENDING,
    SENT,
    OutboxMessage,
)
from personal_assistant.workers.store.engine import session_scope
from personal_assistant.workers.tasks.email_tasks import process_email_queue, send_email
from tests.support.apps import MakeApp
from tests.support.redis_server import free_port
from tests.support.smtp_outbox import OutboxMailbox, smtp_server

SENDER = "Assistant <assistant@example.org>"


@pytest.fixture
def outbox_app(
    clean_env: pytest.MonkeyPatch, make_app: MakeApp, redis_url: str, sqlite_store: str
) -> Callable[..., WorkerApp]:
    """An app whose settings point at the test's sqlite_store, the private Redis and (by default)
    an SMTP server on ``port``; keywords override settings."""

    def make(port: int | None = None, **overrides: Any) -> WorkerApp:
        settings: dict[str, Any] = {
            "celery_broker_url": redis_url,
            "celery_result_backend": redis_url,
            "database_url": sqlite_store,
            "smtp_security": "none",
            "smtp_timeout": 2.0,
            "email_from": SENDER,
        }
        if port is not None:
            settings.update(smtp_host="127.0.0.1", smtp_port=port)
        settings.update(overrides)
        return make_app(**settings)

    return make


def run(app: WorkerApp, task: Any, **kwargs: Any) -> dict[str, Any]:
    """The task's body in this process, as a worker of ``app`` runs it; counters flushed."""
    try:
        result: dict[str, Any] = app.tasks[task.name](**kwargs)
    finally:
        app.domain_metrics.flush()
    return result


def add(app: WorkerApp, *recipients: str, **kwargs: Any) -> list[int]:
    with session_scope(app.settings.store_url) as session:
        return [
            outbox.enqueue(session, app.settings, to, f"to {to}", "body", **kwargs).id
            for to in recipients
        ]


def rows(app: WorkerApp) -> dict[int, OutboxMessage]:
    with session_scope(app.settings.store_url) as session:
        return {r.id: r for r in session.scalars(select(OutboxMessage))}


def counts(client: redis.Redis) -> dict[str, int]:
    found = read_domain_counts(client)
    return {f.name: found.get((f.name,), 0) for f in (EMAIL_SENT, EMAIL_DEFERRED, EMAIL_FAILED)}


def test_the_sweep_sends_every_due_message_over_one_connection_and_counts_them(
    outbox_app: Callable[..., WorkerApp], redis_client: redis.Redis
) -> None:
    mailbox = OutboxMailbox()
    with smtp_server(mailbox) as server:
        app = outbox_app(server.port, email_batch_size=2)
        ids = add(app, *(f"user{n}@example.org" for n in range(5)))
        later = add(app, "later@example.org", send_after=datetime.now(UTC) + timedelta(hours=1))
        result = run(app, process_email_queue)

    assert result == {
        "claimed": 5,
        "sent": 5,
        "deferred": 0,
        "failed": 0,
        "released": 0,
        "lost_claims": 0,
    }
    stored = rows(app)
    assert [stored[i].status for i in ids] == [SENT] * 5
    assert stored[later[0]].status == PENDING
    assert sorted(r.message_id for r in mailbox.received) == sorted(
        stored[i].message_id for i in ids
    )
    assert mailbox.connections == 1  # three batches, one connection
    assert counts(redis_client) == {
        "pa_email_sent": 5,
        "pa_email_deferred": 0,
        "pa_email_failed": 0,
    }


def test_a_5xx_rejection_fails_at_once_with_a_replayable_dead_letter_and_4xx_defers(
    outbox_app: Callable[..., WorkerApp], redis_client: redis.Redis
) -> None:
    mailbox = OutboxMailbox(
        rcpt_replies={
            "gone@example.org": "550 5.1.1 no such user",
            "busy@example.org": "452 4.2.2 mailbox full",
        }
    )
    with smtp_server(mailbox) as server:
        app = outbox_app(server.port)
        gone, busy, ok = add(app, "gone@example.org", "busy@example.org", "ok@example.org")
        result = run(app, process_email_queue)

        assert (result["sent"], result["deferred"], result["failed"]) == (1, 1, 1)
        stored = rows(app)
        assert stored[gone].status == FAILED
        assert stored[gone].last_error == "gone@example.org: 550 5.1.1 no such user"
        assert stored[busy].status == PENDING
        assert stored[busy].last_error == "busy@example.org: 452 4.2.2 mailbox full"
        assert stored[busy].next_attempt_at > datetime.now(UTC) + timedelta(seconds=20)
        assert stored[ok].status == SENT
        assert counts(redis_client) == {
            "pa_email_sent": 1,
            "pa_email_deferred": 1,
            "pa_email_failed": 1,
        }

        (letter,) = DeadLetterQueue(redis_client).list()
        assert letter.task_name == SEND_EMAIL_TASK == send_email.name
        assert letter.kwargs == {"outbox_id": gone, "resend_failed": True}
        assert letter.queue == c.EMAIL_QUEUE
        assert letter.exception_type == "EmailRejected"
        assert stored[gone].message_id in letter.exception
        assert "550 5.1.1 no such user" in letter.exception

        # The operator fixed the address book; replaying the letter's call sends it once.
        mailbox.rcpt_replies.clear()
        resent = run(app, send_email, **letter.kwargs)
        again = run(app, send_email, **letter.kwargs)
    assert (resent["status"], resent["sent"]) == (SENT, 1)
    assert (again["status"], again["sent"], again["claimed"]) == (SENT, 0, 0)
    assert [r.rcpt_tos for r in mailbox.received] == [("ok@example.org",), ("gone@example.org",)]


def test_a_stored_message_that_cannot_be_built_fails_and_the_batch_goes_on(
    outbox_app: Callable[..., WorkerApp], redis_client: redis.Redis
) -> None:
    mailbox = OutboxMailbox()
    with smtp_server(mailbox) as server:
        app = outbox_app(server.port)
        broken, _ = add(app, "a@example.org", "b@example.org")
        with session_scope(app.settings.store_url) as session:  # written by someone else
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == broken)
                .values(headers={"X-Bad": "a\nBcc: x@example.org"})
            )
        result = run(app, process_email_queue)
    assert (result["sent"], result["failed"]) == (1, 1)
    assert "cannot be built" in str(rows(app)[broken].last_error)
    assert [r.rcpt_tos for r in mailbox.received] == [("b@example.org",)]
    assert len(DeadLetterQueue(redis_client)) == 1


def test_without_smtp_settings_an_idle_sweep_succeeds_and_says_what_is_missing(
    outbox_app: Callable[..., WorkerApp],
) -> None:
    app = outbox_app(email_from="")
    result = run(app, process_email_queue)
    assert result["not_configured"] == ["SMTP_HOST", "EMAIL_FROM"]
    assert result["sent"] == 0


def test_without_smtp_settings_due_mail_fails_the_task_naming_them_and_stays_untouched(
    outbox_app: Callable[..., WorkerApp],
) -> None:
    app = outbox_app()  # EMAIL_FROM set (messages were enqueued), SMTP_HOST not
    (outbox_id,) = add(app, "ann@example.org")
    with pytest.raises(PermanentError, match=r"1 e-mail\(s\) due but SMTP_HOST not set"):
        run(app, process_email_queue)
    with pytest.raises(PermanentError, match=f"outbox message {outbox_id} cannot be sent: SMTP"):
        run(app, send_email, outbox_id=outbox_id)
    stored = rows(app)[outbox_id]
    assert (stored.status, stored.attempts) == (PENDING, 0)


def test_without_email_from_stored_mail_is_still_sent_and_the_gap_reported(
    outbox_app: Callable[..., WorkerApp],
) -> None:
    mailbox = OutboxMailbox()
    with smtp_server(mailbox) as server:
        (outbox_id,) = add(outbox_app(server.port), "ann@example.org")  # stored with a From
        result = run(outbox_app(server.port, email_from=""), process_email_queue)
    assert (result["sent"], result["not_configured"]) == (1, ["EMAIL_FROM"])
    assert rows(outbox_app())[outbox_id].status == SENT


def test_an_unreachable_server_fails_the_sweep_as_transient_and_claims_nothing(
    outbox_app: Callable[..., WorkerApp],
) -> None:
    app = outbox_app(free_port())
    (outbox_id,) = add(app, "ann@example.org")
    with pytest.raises(SmtpUnavailable, match="unreachable"):
        run(app, process_email_queue)
    # send_email leaves it for the sweep instead of retrying on its own.
    result = run(app, send_email, outbox_id=outbox_id)
    assert result["status"] == PENDING
    assert "unreachable" in result["error"]
    stored = rows(app)[outbox_id]
    assert (stored.status, stored.attempts) == (PENDING, 0)


def test_send_email_refuses_an_unknown_or_malformed_id(
    outbox_app: Callable[..., WorkerApp],
) -> None:
    app = outbox_app(free_port())
    with pytest.raises(PermanentError, match="outbox message 42 does not exist"):
        run(app, send_email, outbox_id=42)
    with pytest.raises(PermanentError, match="outbox_id must be a positive integer, got '1'"):
        run(app, send_email, outbox_id="1")
    with pytest.raises(PermanentError, match="resend_failed must be true or false"):
        run(app, send_email, outbox_id=1, resend_failed="yes")


def test_a_store_that_is_not_migrated_is_named_with_the_command_to_run(
    outbox_app: Callable[..., WorkerApp], tmp_path: Path
) -> None:
    app = outbox_app(free_port(), database_url=f"sqlite:///{tmp_path}/fresh.db")
    with pytest.raises(PermanentError, match=r"is not migrated: run `celery .* db upgrade`"):
        run(app, process_email_queue)
    with pytest.raises(StoreNotMigrated, match="is not migrated"):
        enqueue_email("ann@example.org", "s", "t", app=app)


def test_enqueue_email_stores_the_message_then_publishes_send_email_for_it(
    outbox_app: Callable[..., WorkerApp], redis_client: redis.Redis
) -> None:
    app = outbox_app(free_port())
    message_id = enqueue_email(
        ["ann@example.org"], "Reminder", "Dentist at 3", html="<p>Dentist</p>", app=app
    )
    (stored,) = rows(app).values()
    assert stored.message_id == message_id
    assert message_id.endswith("@example.org>")
    assert (stored.status, stored.html_body) == (PENDING, "<p>Dentist</p>")
    assert queue_depths(redis_client, [c.EMAIL_QUEUE]) == {c.EMAIL_QUEUE: 1}

    # Held until later: stored, not published (the sweep sends it when due).
    enqueue_email(
        "ann@example.org", "Later", "t", send_after=datetime.now(UTC) + timedelta(1), app=app
    )
    assert len(rows(app)) == 2
    assert queue_depths(redis_client, [c.EMAIL_QUEUE]) == {c.EMAIL_QUEUE: 1}


def test_enqueue_email_refuses_bad_input_storing_and_publishing_nothing(
    outbox_app: Callable[..., WorkerApp], redis_client: redis.Redis
) -> None:
    app = outbox_app(free_port())
    with pytest.raises(MailError, match="header injection refused"):
        enqueue_email("ann@example.org", "Hi\r\nBcc: all@example.org", "t", app=app)
    with pytest.raises(MailError, match="header 'Bcc' is set by the outbox itself"):
        enqueue_email("ann@example.org", "Hi", "t", headers={"Bcc": "x@example.org"}, app=app)
    assert rows(app) == {}
    assert queue_depths(redis_client, [c.EMAIL_QUEUE]) == {c.EMAIL_QUEUE: 0}


def test_enqueue_email_without_an_app_uses_the_deployment_app() -> None:
    # Loaded by name (see email_scheduler.py); a wrong name would fail only at the first call.
    assert symbol_by_name(DEPLOYMENT_APP) is deployment_app


def test_the_email_tasks_declare_they_are_not_idempotent() -> None:
    assert send_email.idempotent is False
    assert process_email_queue.idempotent is False
