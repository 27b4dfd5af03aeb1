"""The beat lock is held by one owner at a time, only its holder renews or releases it, and an
expired lock passes to another beat with a larger fencing token (real Redis)."""

from __future__ import annotations

import time

import pytest
import redis

from personal_assistant.workers.schedulers.beat_lock import (
    BEAT_FENCE_KEY,
    BEAT_LOCK_KEY,
    RENEW_FRACTION,
    BeatLock,
    lock_value,
    parse_lock_value,
)

# Long enough that no lock expires by itself during a test that does not wait for it.
HELD_S = 30.0
# Short enough that the expiry tests wait little, long enough to take and check the lock first.
EXPIRING_S = 0.15


def wait_until_expired(client: redis.Redis, key: str = BEAT_LOCK_KEY) -> None:
    """Poll until Redis has expired ``key`` (it reads as absent from the moment PX elapses)."""
    deadline = time.monotonic() + 5
    while client.exists(key):
        assert time.monotonic() < deadline, f"{key} did not expire"
        time.sleep(0.02)


def test_a_held_lock_refuses_every_other_acquire_including_its_owners_second(
    redis_client: redis.Redis,
) -> None:
    first = BeatLock(redis_client, owner="beat-a", timeout=HELD_S)
    other = BeatLock(redis_client, owner="beat-b", timeout=HELD_S)
    again = BeatLock(redis_client, owner="beat-a", timeout=HELD_S)

    assert first.acquire()
    assert first.token == 1
    assert not other.acquire()
    assert not again.acquire()  # a restarted beat of the same name waits for the expiry too
    assert other.token is None
    assert again.token is None
    assert first.holder() == other.holder() == "beat-a"
    assert redis_client.get(BEAT_LOCK_KEY) == b"1:beat-a"


def test_a_refused_acquire_uses_up_no_fencing_token(redis_client: redis.Redis) -> None:
    assert BeatLock(redis_client, owner="beat-a", timeout=HELD_S).acquire()
    for _ in range(3):
        assert not BeatLock(redis_client, owner="beat-b", timeout=HELD_S).acquire()

    assert redis_client.get(BEAT_FENCE_KEY) == b"1"


def test_the_holders_renew_resets_the_time_to_live(redis_client: redis.Redis) -> None:
    lock = BeatLock(redis_client, owner="beat-a", timeout=HELD_S)
    assert lock.acquire()
    redis_client.pexpire(BEAT_LOCK_KEY, 500)  # as if most of the timeout had passed

    assert lock.renew()
    assert redis_client.pttl(BEAT_LOCK_KEY) > 20_000
    assert lock.token == 1


def test_renew_by_a_non_owner_fails_and_does_not_extend_the_lock(
    redis_client: redis.Redis,
) -> None:
    holder = BeatLock(redis_client, owner="beat-a", timeout=1.0)
    assert holder.acquire()
    # Another beat presenting the holder's very token, with a longer timeout of its own: the
    # owner differs, so nothing may change (redbeat #127 extended any holder's lock).
    intruder = BeatLock(redis_client, owner="beat-b", timeout=HELD_S)
    intruder.token = holder.token

    assert not intruder.renew()
    assert intruder.token is None
    assert 0 < redis_client.pttl(BEAT_LOCK_KEY) <= 1000
    assert holder.holder() == "beat-a"
    assert not BeatLock(redis_client, owner="beat-c", timeout=HELD_S).renew()  # never acquired


def test_an_expired_lock_goes_to_another_owner_with_a_larger_token_and_the_old_renew_fails(
    redis_client: redis.Redis,
) -> None:
    old = BeatLock(redis_client, owner="beat-a", timeout=EXPIRING_S)
    new = BeatLock(redis_client, owner="beat-b", timeout=HELD_S)
    assert old.acquire()
    old_token = old.token
    assert old_token is not None
    assert not new.acquire()

    wait_until_expired(redis_client)  # beat-a "paused" past its timeout
    assert new.acquire()
    assert new.token is not None
    assert new.token > old_token

    assert not old.renew()  # it finds out, and stops believing it holds the lock
    assert old.token is None
    assert new.holder() == "beat-b"
    assert redis_client.pttl(BEAT_LOCK_KEY) > 20_000  # the failed renew did not touch it


def test_a_beat_that_lost_the_lock_rejoins_the_election(redis_client: redis.Redis) -> None:
    lost = BeatLock(redis_client, owner="beat-a", timeout=EXPIRING_S)
    winner = BeatLock(redis_client, owner="beat-b", timeout=HELD_S)
    assert lost.acquire()
    wait_until_expired(redis_client)
    assert winner.acquire()
    assert not lost.renew()

    assert winner.release()
    assert lost.acquire()  # redbeat #306: a beat that lost the lock never took it again
    assert lost.token == 3
    assert lost.holder() == "beat-a"


def test_release_by_a_non_owner_keeps_the_lock(redis_client: redis.Redis) -> None:
    holder = BeatLock(redis_client, owner="beat-a", timeout=HELD_S)
    assert holder.acquire()
    intruder = BeatLock(redis_client, owner="beat-b", timeout=HELD_S)
    intruder.token = holder.token

    assert not intruder.release()
    assert not BeatLock(redis_client, owner="beat-c", timeout=HELD_S).release()
    assert holder.holder() == "beat-a"
    assert holder.renew()


def test_a_stale_holders_release_keeps_the_new_holders_lock(redis_client: redis.Redis) -> None:
    old = BeatLock(redis_client, owner="beat-a", timeout=EXPIRING_S)
    assert old.acquire()
    wait_until_expired(redis_client)
    new = BeatLock(redis_client, owner="beat-b", timeout=HELD_S)
    assert new.acquire()

    assert not old.release()
    assert new.holder() == "beat-b"


def test_release_by_the_holder_frees_the_lock_at_once(redis_client: redis.Redis) -> None:
    holder = BeatLock(redis_client, owner="beat-a", timeout=HELD_S)
    assert holder.acquire()

    assert holder.release()
    assert holder.token is None
    assert holder.holder() is None
    assert BeatLock(redis_client, owner="beat-b", timeout=HELD_S).acquire()


def test_the_renew_interval_is_a_third_of_the_timeout(redis_client: redis.Redis) -> None:
    lock = BeatLock(redis_client, owner="beat-a", timeout=30.0)

    assert RENEW_FRACTION <= 1 / 3
    assert lock.renew_interval == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("owner", "timeout", "message"),
    [
        ("", 10.0, "owner must not be empty"),
        ("beat-a", 0.0, "timeout must be at least"),
        ("beat-a", float("nan"), "timeout must be at least"),
        ("beat-a", float("inf"), "timeout must be at least"),
    ],
)
def test_a_lock_with_a_bad_owner_or_timeout_is_refused_with_a_clear_error(
    redis_client: redis.Redis, owner: str, timeout: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BeatLock(redis_client, owner=owner, timeout=timeout)


def test_a_lock_value_round_trips_owners_with_colons_and_refuses_other_text() -> None:
    assert parse_lock_value(lock_value(7, "host:1234:abc").encode()) == (7, "host:1234:abc")
    assert parse_lock_value("12:beat") == (12, "beat")
    for bad in ("beat-a", "x:beat", "3:", ""):
        with pytest.raises(ValueError, match="not a beat lock value"):
            parse_lock_value(bad)
