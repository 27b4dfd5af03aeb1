"""The marks of a claimed message's fate: sent is final, a deferral comes back after a doubling
delay and fails once out of attempts, a failure keeps the server's reply (and an operator can
queue it again), a release gives the message back without counting its attempt."""

from __future__ import annotations

import random
from datetime import timedelta

from personal_assistant.workers.mail import marks, outbox
from personal_assistant.workers.store.email_models import FAILED, PENDING, SENT
from personal_assistant.workers.store.engine import session_scope
from tests.unit.mail.outbox_rows import T0, add, claim, row


def test_mark_sent_is_final_and_clears_the_lease(sqlite_store: str) -> None:
    add(sqlite_store)
    (claimed,) = claim(sqlite_store)
    with session_scope(sqlite_store) as session:
        assert marks.mark_sent(session, claimed, now=T0 + timedelta(seconds=1))
    saved = row(sqlite_store, claimed.id)
    assert (saved.status, saved.lease_token, saved.sent_at) == (
        SENT,
        None,
        T0 + timedelta(seconds=1),
    )
    assert claim(sqlite_store, now=T0 + timedelta(days=1)) == []


def test_a_deferred_message_comes_back_after_a_doubling_delay_then_fails_out_of_attempts(
    sqlite_store: str,
) -> None:
    (outbox_id,) = add(sqlite_store)
    now = T0
    due_times = []
    for attempt in range(1, 4):
        (claimed,) = claim(sqlite_store, now=now)
        with session_scope(sqlite_store) as session:
            status = marks.defer(
                session, claimed, "451 try later", max_attempts=3, base=60, maximum=100, now=now
            )
        saved = row(sqlite_store, outbox_id)
        if attempt < 3:
            assert status == PENDING
            due_times.append((saved.next_attempt_at - now).total_seconds())
            assert claim(sqlite_store, now=now) == []  # not before its time
            now = saved.next_attempt_at
        else:
            assert status == FAILED
            assert saved.last_error == "gave up after 3 attempts; last: 451 try later"
    assert 30 <= due_times[0] <= 60
    assert 60 <= due_times[1] <= 100  # doubled (60 to 120), capped at the maximum


def test_retry_delays_double_with_equal_jitter_up_to_the_maximum() -> None:
    rng = random.Random(7)
    for attempts, (low, high) in {
        1: (30, 60),
        2: (60, 120),
        3: (120, 240),
        9: (1000, 1000),
    }.items():
        for _ in range(20):
            assert low <= marks.retry_delay(attempts, base=60, maximum=1000, rng=rng) <= high


def test_a_failed_message_keeps_the_reply_and_an_operator_can_queue_it_again(
    sqlite_store: str,
) -> None:
    (outbox_id,) = add(sqlite_store)
    (claimed,) = claim(sqlite_store)
    with session_scope(sqlite_store) as session:
        assert marks.fail(session, claimed, "550 5.1.1 no such user")
    saved = row(sqlite_store, outbox_id)
    assert (saved.status, saved.last_error) == (FAILED, "550 5.1.1 no such user")
    assert claim(sqlite_store, now=T0 + timedelta(days=1)) == []

    with session_scope(sqlite_store) as session:
        assert outbox.reset_failed(session, outbox_id, now=T0)
        assert not outbox.reset_failed(session, outbox_id, now=T0)  # pending now, not failed
    (again,) = claim(sqlite_store)
    assert again.attempts == 1


def test_released_messages_are_due_at_once_and_their_attempt_is_not_counted(
    sqlite_store: str,
) -> None:
    add(sqlite_store, 2)
    claimed = claim(sqlite_store)
    with session_scope(sqlite_store) as session:
        assert marks.release(session, claimed) == 2
    again = claim(sqlite_store)
    assert [m.id for m in again] == [m.id for m in claimed]
    assert [m.attempts for m in again] == [1, 1]
