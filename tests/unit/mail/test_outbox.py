"""The outbox's store operations on SQLite and PostgreSQL: enqueue checks and stores, a claim
takes due messages under a lease so no two claims share one (concurrent claims included), and
a lease that expires gives the message back to the next claim, not to the old one."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from personal_assistant.workers.config import load_settings
from personal_assistant.workers.mail import marks, outbox
from personal_assistant.workers.mail.message import MailError
from personal_assistant.workers.store.email_models import (
    PENDING,
    SENDING,
    SENT,
    OutboxMessage,
)
from personal_assistant.workers.store.engine import session_scope
from personal_assistant.workers.store.migrate import upgrade
from tests.unit.mail.outbox_rows import LEASE, T0, add, claim, row, settings


def test_enqueue_stores_a_checked_pending_message_with_a_message_id_in_the_senders_domain(
    any_store: str,
) -> None:
    with session_scope(any_store) as session:
        stored = outbox.enqueue(
            session,
            settings(),
            ["ann@example.org", "bob@example.org"],
            "Hello",
            "text",
            html="<p>html</p>",
            headers={"Reply-To": "help@example.org"},
            now=T0,
        )
    saved = row(any_store, stored.id)
    assert saved.status == PENDING
    assert saved.attempts == 0
    assert saved.sender == "Assistant <assistant@example.org>"
    assert saved.recipients == ["ann@example.org", "bob@example.org"]
    assert (saved.subject, saved.text_body, saved.html_body) == ("Hello", "text", "<p>html</p>")
    assert saved.headers == {"Reply-To": "help@example.org"}
    assert saved.message_id.endswith("@example.org>")
    assert saved.next_attempt_at == T0 == saved.created_at


def test_a_bad_message_is_refused_and_nothing_is_stored(sqlite_store: str) -> None:
    with (
        pytest.raises(MailError, match="subject contains a line break"),
        session_scope(sqlite_store) as session,
    ):
        outbox.enqueue(session, settings(), "ann@example.org", "a\r\nBcc: x@example.org", "b")
    with (
        pytest.raises(MailError, match="EMAIL_FROM is not set"),
        session_scope(sqlite_store) as session,
    ):
        outbox.enqueue(session, load_settings(), "ann@example.org", "subject", "b")
    with (
        pytest.raises(MailError, match="send_after must be timezone-aware"),
        session_scope(sqlite_store) as session,
    ):
        naive = datetime(2030, 1, 1)  # the bad input under test
        outbox.enqueue(session, settings(), "ann@example.org", "s", "b", send_after=naive)
    with session_scope(sqlite_store) as session:
        assert session.scalars(select(OutboxMessage)).all() == []


def test_a_claim_takes_due_messages_oldest_first_under_one_lease_and_counts_an_attempt(
    any_store: str,
) -> None:
    older = add(any_store, 2, now=T0 - timedelta(minutes=5))
    newer = add(any_store, 2)
    later = add(any_store, 1, send_after=T0 + timedelta(hours=1))

    claimed = claim(any_store, limit=3)

    assert [m.id for m in claimed] == [*older, newer[0]]
    assert len({m.lease_token for m in claimed}) == 1
    assert all(m.attempts == 1 for m in claimed)
    assert claimed[0].lease_expires_at == T0 + timedelta(seconds=LEASE)
    assert row(any_store, older[0]).status == SENDING
    # What is left: one due message; the one held until send_after is not due yet.
    assert [m.id for m in claim(any_store)] == [newer[1]]
    assert claim(any_store) == []
    # An hour on, it is due (and so are the others again: their leases expired).
    assert later[0] in [m.id for m in claim(any_store, now=T0 + timedelta(hours=1))]


def test_a_message_whose_lease_expired_is_claimed_again_and_the_old_claim_marks_nothing(
    any_store: str,
) -> None:
    add(any_store)
    (first,) = claim(any_store)
    assert claim(any_store, now=T0 + timedelta(seconds=LEASE - 1)) == []

    (second,) = claim(any_store, now=T0 + timedelta(seconds=LEASE))

    assert second.id == first.id
    assert second.lease_token != first.lease_token
    assert second.attempts == 2
    with session_scope(any_store) as session:
        assert marks.mark_sent(session, first) is False  # the dead worker's claim
        assert marks.mark_sent(session, second) is True
    assert row(any_store, first.id).status == SENT


def test_due_count_counts_pending_due_messages_and_expired_leases(sqlite_store: str) -> None:
    add(sqlite_store, 3)
    add(sqlite_store, 1, send_after=T0 + timedelta(hours=1))
    claim(sqlite_store, limit=1)
    with session_scope(sqlite_store) as session:
        assert outbox.due_count(session, T0) == 2
        assert outbox.due_count(session, T0 + timedelta(seconds=LEASE)) == 3
        assert outbox.due_count(session, T0 + timedelta(hours=1)) == 4


def test_claim_one_takes_only_that_message_and_only_when_it_is_free(sqlite_store: str) -> None:
    first, second = add(sqlite_store, 2)
    with session_scope(sqlite_store) as session:
        claimed = outbox.claim_one(session, second, lease_seconds=LEASE, now=T0)
        assert claimed is not None and claimed.id == second
        assert outbox.claim_one(session, second, lease_seconds=LEASE, now=T0) is None
        assert outbox.claim_one(session, 999, lease_seconds=LEASE, now=T0) is None
    assert row(sqlite_store, first).status == PENDING


def test_concurrent_claims_on_sqlite_never_share_a_message(sqlite_store: str) -> None:
    ids = set(add(sqlite_store, 40))
    taken: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def drain(mine: list[int]) -> None:
        start.wait()
        while batch := claim(sqlite_store, limit=4):
            mine.extend(m.id for m in batch)
            time.sleep(0.002)  # let the other claimer in between two claims

    threads = [threading.Thread(target=drain, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    claimed = [i for mine in taken for i in mine]
    assert sorted(claimed) == sorted(ids)  # each exactly once
    assert all(taken)  # both claimed some: the claims did race


def test_a_postgresql_claim_skips_rows_another_open_claim_holds(postgres_url: str) -> None:
    upgrade(postgres_url)
    ids = add(postgres_url, 6)
    # Session A claims and keeps its transaction open: its rows stay locked.
    with session_scope(postgres_url) as holding:
        first = outbox.claim_batch(holding, limit=4, lease_seconds=LEASE, now=T0)
        # Session B claims meanwhile: SKIP LOCKED hands it the other rows at once, no waiting.
        second = claim(postgres_url, limit=10)
    assert [m.id for m in first] == ids[:4]
    assert [m.id for m in second] == ids[4:]
    assert claim(postgres_url) == []
