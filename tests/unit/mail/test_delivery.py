"""A batch of claimed messages sent over one connection: each is marked as soon as its reply
is in; a connection that cannot be opened again stops the batch and gives the untried
messages back uncounted; a lease about to run out stops the batch the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from personal_assistant.workers.config import load_settings
from personal_assistant.workers.mail import outbox
from personal_assistant.workers.mail.delivery import (
    DeliveryReport,
    FinalFailure,
    OutboxDelivery,
    OutboxPolicy,
)
from personal_assistant.workers.mail.smtp_sender import SmtpConfig, SmtpSession, SmtpUnavailable
from personal_assistant.workers.store.email_models import PENDING, SENT, OutboxMessage
from personal_assistant.workers.store.engine import session_scope
from tests.support.alert_servers import LoopbackSMTP
from tests.support.smtp_outbox import OutboxMailbox, smtp_server

POLICY = OutboxPolicy(batch_size=10, lease_seconds=60, max_attempts=3, lease_margin=5)


def add(url: str, count: int) -> list[int]:
    settings = load_settings(email_from="assistant@example.org")
    with session_scope(url) as session:
        return [
            outbox.enqueue(session, settings, f"user{n}@example.org", f"s{n}", "b").id
            for n in range(count)
        ]


def plain(port: int) -> SmtpConfig:
    return SmtpConfig("127.0.0.1", port, "none", timeout=2)


def states(url: str) -> list[tuple[str, int]]:
    with session_scope(url) as session:
        found = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        return [(r.status, r.attempts) for r in found]


def test_each_message_is_marked_sent_on_either_store(any_store: str) -> None:
    ids = add(any_store, 3)
    mailbox = OutboxMailbox()
    with smtp_server(mailbox) as server, SmtpSession(plain(server.port)) as smtp:
        delivery = OutboxDelivery(any_store, smtp, POLICY)
        report = delivery.deliver(delivery.claim_batch())
        assert delivery.claim_batch() == []
    assert (report.claimed, report.sent) == (3, 3)
    assert states(any_store) == [(SENT, 1)] * 3
    with session_scope(any_store) as session:
        sent_at = session.scalars(select(OutboxMessage.sent_at).where(OutboxMessage.id.in_(ids)))
        # Written by the driver on SQLite: read back as any other time (aware UTC, now).
        assert all(
            t is not None and abs(t - datetime.now(UTC)) < timedelta(minutes=1) for t in sent_at
        )
    assert len(mailbox.received) == 3


def test_a_connection_that_cannot_be_opened_again_releases_the_untried_messages(
    sqlite_store: str,
) -> None:
    add(sqlite_store, 4)
    mailbox = OutboxMailbox()
    report = DeliveryReport()
    server = LoopbackSMTP(mailbox)
    server.start()
    smtp = SmtpSession(plain(server.port))
    try:

        def server_goes_away(progress: DeliveryReport) -> None:
            if progress.sent == 1 and server.loop.is_running():
                server.stop()  # after the first message: the connection and the port go

        delivery = OutboxDelivery(sqlite_store, smtp, POLICY, on_progress=server_goes_away)
        batch = delivery.claim_batch()
        with pytest.raises(SmtpUnavailable):
            delivery.deliver(batch, report)
    finally:
        smtp.close()
        if server.loop.is_running():
            server.stop()

    assert (report.sent, report.deferred, report.released) == (1, 1, 2)
    # Sent; deferred (tried on the dropped connection: counted); two untried, not counted.
    assert states(sqlite_store) == [(SENT, 1), (PENDING, 1), (PENDING, 0), (PENDING, 0)]
    assert len(mailbox.received) == 1


def test_messages_whose_lease_is_about_to_run_out_are_released_not_sent(sqlite_store: str) -> None:
    add(sqlite_store, 3)
    mailbox = OutboxMailbox()
    short = OutboxPolicy(batch_size=10, lease_seconds=60, max_attempts=3, lease_margin=60)
    with smtp_server(mailbox) as server, SmtpSession(plain(server.port)) as smtp:
        delivery = OutboxDelivery(sqlite_store, smtp, short)
        report = delivery.deliver(delivery.claim_batch())
    assert (report.claimed, report.sent, report.released) == (3, 0, 3)
    assert states(sqlite_store) == [(PENDING, 0)] * 3
    assert mailbox.received == []


def test_a_message_out_of_attempts_fails_for_good_and_is_reported(sqlite_store: str) -> None:
    (outbox_id,) = add(sqlite_store, 1)
    failures: list[FinalFailure] = []
    mailbox = OutboxMailbox(rcpt_replies={"user0@example.org": "451 4.7.1 greylisted"})
    once = OutboxPolicy(batch_size=10, lease_seconds=60, max_attempts=1, lease_margin=5)
    with smtp_server(mailbox) as server, SmtpSession(plain(server.port)) as smtp:
        delivery = OutboxDelivery(sqlite_store, smtp, once, on_failed=failures.append)
        report = delivery.deliver(delivery.claim_batch())
    assert (report.deferred, report.failed) == (0, 1)
    (failure,) = failures
    assert failure.message.id == outbox_id
    assert failure.reason == (
        "gave up after 1 attempts; last: user0@example.org: 451 4.7.1 greylisted"
    )


def test_the_policy_keeps_one_smtp_timeout_of_lease_in_hand_at_most_half_the_lease() -> None:
    settings = load_settings(smtp_timeout=30, email_lease_seconds=300)
    assert OutboxPolicy.from_settings(settings).lease_margin == 30
    settings = load_settings(smtp_timeout=30, email_lease_seconds=4)
    assert OutboxPolicy.from_settings(settings).lease_margin == 2
    assert datetime.now(UTC)  # the margin is compared with aware UTC times
