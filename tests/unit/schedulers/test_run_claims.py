"""A beat entry's run is claimed once per due time, only by the beat lock's current holder, and
the record of it outlives the beat and its Redis client (real Redis)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis

from personal_assistant.workers.schedulers.beat_lock import BEAT_LOCK_KEY, BeatLock
from personal_assistant.workers.schedulers.run_claims import (
    BEAT_ENTRY_PREFIX,
    claim_run,
    entry_state,
)

HELD_S = 30.0  # no lock expires by itself during a test that does not wait for it
EXPIRING_S = 0.15  # short, for the tests that wait for an expiry
DUE = 1_764_644_250.123456  # a due time with microseconds, which must survive the round trip
RACERS = 8


def held_token(client: redis.Redis, owner: str = "beat-a", timeout: float = HELD_S) -> int:
    """Take the beat lock as ``owner`` and return its fencing token."""
    lock = BeatLock(client, owner=owner, timeout=timeout)
    assert lock.acquire()
    assert lock.token is not None
    return lock.token


def test_the_lock_holder_claims_a_due_run_and_it_is_recorded(redis_client: redis.Redis) -> None:
    token = held_token(redis_client)

    assert claim_run(
        redis_client, entry="send-email", due_at=DUE, token=token, lock_key=BEAT_LOCK_KEY
    )

    state = entry_state(redis_client, "send-email")
    assert state["last_run"] == DUE
    assert state["run_count"] == 1
    assert state["claimed_at"] is not None
    assert abs(state["claimed_at"] - time.time()) < 5  # Redis's clock, on this machine
    stored = redis_client.hgetall(f"{BEAT_ENTRY_PREFIX}send-email")
    assert stored[b"token"] == str(token).encode()


def test_an_entry_that_never_ran_has_no_last_run_and_no_count(redis_client: redis.Redis) -> None:
    assert entry_state(redis_client, "never") == {
        "last_run": None,
        "run_count": 0,
        "claimed_at": None,
    }


def test_each_due_time_is_claimed_exactly_once_by_eight_racing_clients(redis_url: str) -> None:
    clients = [redis.Redis.from_url(redis_url) for _ in range(RACERS)]
    try:
        token = held_token(clients[0])
        due_times = [DUE + 60 * step for step in range(20)]
        start = threading.Barrier(RACERS)
        wins: Counter[float] = Counter()
        guard = threading.Lock()
        errors: list[BaseException] = []

        def race(client: redis.Redis) -> None:
            try:
                start.wait(timeout=10)
                for due in due_times:
                    if claim_run(client, entry="sync", due_at=due, token=token):
                        with guard:
                            wins[due] += 1
            except BaseException as error:  # reported by the main thread's assertion
                errors.append(error)

        threads = [threading.Thread(target=race, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert not errors
        assert not any(thread.is_alive() for thread in threads)
        assert wins == dict.fromkeys(due_times, 1)
        state = entry_state(clients[0], "sync")
        assert state["run_count"] == len(due_times)
        assert state["last_run"] == due_times[-1]
    finally:
        for client in clients:
            client.close()


def test_a_claim_with_a_stale_token_is_refused_and_records_nothing(
    redis_client: redis.Redis,
) -> None:
    stale = held_token(redis_client, owner="beat-a", timeout=EXPIRING_S)
    deadline = time.monotonic() + 5
    while redis_client.exists(BEAT_LOCK_KEY):  # beat-a pauses past its timeout
        assert time.monotonic() < deadline, "the lock did not expire"
        time.sleep(0.02)
    assert not claim_run(redis_client, entry="report", due_at=DUE, token=stale)  # no lock at all

    current = held_token(redis_client, owner="beat-b")
    assert current > stale

    assert not claim_run(redis_client, entry="report", due_at=DUE, token=stale)
    assert entry_state(redis_client, "report")["run_count"] == 0
    assert claim_run(redis_client, entry="report", due_at=DUE, token=current)


def test_a_token_from_before_a_redis_restart_does_not_outrank_the_new_holder(
    redis_client: redis.Redis,
) -> None:
    redis_client.set("pa:beat:fence", 5)  # beat-a took token 6 before Redis lost its data
    stale = held_token(redis_client, owner="beat-a")
    redis_client.flushall()  # a restart without persistence: the counter starts again
    current = held_token(redis_client, owner="beat-b")
    assert current == 1 < stale

    assert not claim_run(redis_client, entry="report", due_at=DUE, token=stale)
    assert claim_run(redis_client, entry="report", due_at=DUE, token=current)


def test_a_due_time_not_newer_than_the_recorded_one_is_refused(redis_client: redis.Redis) -> None:
    token = held_token(redis_client)
    assert claim_run(redis_client, entry="digest", due_at=DUE, token=token)

    assert not claim_run(redis_client, entry="digest", due_at=DUE, token=token)
    assert not claim_run(redis_client, entry="digest", due_at=DUE - 60, token=token)
    state = entry_state(redis_client, "digest")
    assert (state["last_run"], state["run_count"]) == (DUE, 1)
    assert claim_run(redis_client, entry="digest", due_at=DUE + 60, token=token)
    assert entry_state(redis_client, "digest")["last_run"] == DUE + 60
    assert entry_state(redis_client, "digest")["run_count"] == 2


def test_entries_are_claimed_independently(redis_client: redis.Redis) -> None:
    token = held_token(redis_client)

    assert claim_run(redis_client, entry="a", due_at=DUE, token=token)
    assert claim_run(redis_client, entry="b", due_at=DUE, token=token)
    assert entry_state(redis_client, "a")["run_count"] == 1
    assert entry_state(redis_client, "b")["run_count"] == 1


def test_the_state_survives_a_new_client_and_a_restarted_beat_does_not_repeat_a_run(
    redis_url: str,
) -> None:
    first_beat = redis.Redis.from_url(redis_url)
    lock = BeatLock(first_beat, owner="beat-a", timeout=HELD_S)
    assert lock.acquire()
    assert lock.token is not None
    assert claim_run(first_beat, entry="cleanup", due_at=DUE, token=lock.token)
    assert lock.release()
    first_beat.close()

    restarted = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        state = entry_state(restarted, "cleanup")
        assert state["last_run"] == DUE
        assert state["run_count"] == 1
        token = held_token(restarted, owner="beat-a-restarted")

        assert not claim_run(restarted, entry="cleanup", due_at=DUE, token=token)
        assert claim_run(restarted, entry="cleanup", due_at=DUE + 3600, token=token)
        assert entry_state(restarted, "cleanup")["run_count"] == 2
    finally:
        restarted.close()


@pytest.mark.parametrize(
    ("entry", "due_at", "token", "message"),
    [
        ("", DUE, 1, "entry name must not be empty"),
        ("x", float("nan"), 1, "due_at must be a finite Unix time"),
        ("x", float("inf"), 1, "due_at must be a finite Unix time"),
        ("x", DUE, 0, "token must be a positive fencing token"),
        ("x", DUE, True, "token must be a positive fencing token"),
    ],
)
def test_a_claim_with_bad_input_is_refused_with_a_clear_error(
    redis_client: redis.Redis, entry: str, due_at: float, token: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        claim_run(redis_client, entry=entry, due_at=due_at, token=token)
