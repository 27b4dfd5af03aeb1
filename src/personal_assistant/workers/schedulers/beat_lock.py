"""The beat lock: only one of several running beats sends, and a dead one is replaced in time.

One Redis string holds the lock: ``"<fencing token>:<owner>"`` with a time to live of
``timeout``. A beat takes it with ``acquire`` (free -> taken, in one script: SET NX PX plus
the token), keeps it with ``renew`` at least every third of the timeout (``RENEW_FRACTION``),
and gives it up with ``release``. A beat that dies simply stops renewing: Redis expires the
key after ``timeout`` and the next beat's ``acquire`` wins, so failover takes at most
``timeout`` plus one renew interval of the waiting beat. Expiry runs on Redis's clock, so the
beats' clocks may disagree without effect.

The fencing token is a counter in Redis (``BEAT_FENCE_KEY``) incremented by every successful
acquire and written into the lock's value. A beat that paused past its timeout still believes
it holds the lock until its next renew fails; the token lets the run claim
(``run_claims.claim_run``) refuse its sends in that window, because the lock then carries a
newer token than the stale beat's.

Why not celery-redbeat: its lock is redis-py's ``Lock``, and its known failures are this
module's requirements. It extended the lock with a bare PEXPIRE without checking the owner
(redbeat #127), so a beat whose lock had expired and been taken by another kept extending the
other's lock and both sent; here ``renew`` and ``release`` compare the whole value (owner and
token) inside one Lua script. A beat whose loop slept longer than the lock timeout lost the
lock and never re-joined the election (#306, #230); here a lost lock only clears ``token``,
``acquire`` can be called again at any time, and ``RENEW_FRACTION`` bounds the sleep. It sent
even after failing to acquire (#214); here ``acquire`` returns False and the claim refuses
any token that is not the lock's current one, so a send without the lock cannot be claimed.
Its lock had no fencing token at all, which is what lets a paused holder be refused.
"""

from __future__ import annotations

import math
from typing import Final, cast

import redis

from personal_assistant.workers import keys

BEAT_LOCK_KEY: Final = keys.BEAT_LOCK_KEY
BEAT_FENCE_KEY: Final = keys.BEAT_FENCE_KEY

# A holder renews at least every third of the timeout, so two renewals in a row can fail (a
# slow Redis round trip, a long tick of the beat loop, a garbage-collection pause) and the
# third still lands before the lock expires. The beat loop must therefore never sleep longer
# than ``renew_interval``: sleeping past the timeout is how redbeat's beats lost their lock.
RENEW_FRACTION: Final = 1 / 3

# Below a millisecond PX cannot express the timeout (it is whole milliseconds, at least 1).
_MIN_TIMEOUT_S: Final = 0.001

# KEYS[1]: the lock; KEYS[2]: the fence counter. ARGV[1]: owner; ARGV[2]: timeout in ms.
# Returns the new fencing token, or 0 when the lock is held (by anyone, this owner too: a beat
# that still holds it renews instead, and a restarted beat with the same owner name must not
# take over its predecessor's token while that one may still be running).
# The EXISTS test first, so a refused acquire does not use up a token; SET NX PX then takes it.
_ACQUIRE_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2])
return token
"""

# KEYS[1]: the lock. ARGV[1]: the holder's whole value; ARGV[2]: timeout in ms.
# Returns 1 when the value matched and the time to live was reset, 0 otherwise (another owner,
# a newer token, or expired: then nothing is touched).
_RENEW_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""

# KEYS[1]: the lock. ARGV[1]: the holder's whole value. Returns 1 when deleted, 0 when the lock
# was not this holder's (someone else's lock is left alone).
_RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
"""


def lock_value(token: int, owner: str) -> str:
    """The lock's stored value for ``owner`` holding fencing token ``token``."""
    return f"{token}:{owner}"


def parse_lock_value(value: bytes | str) -> tuple[int, str]:
    """The (fencing token, owner) of a stored lock value; ValueError if it is not one."""
    text = value.decode() if isinstance(value, bytes) else value
    token, sep, owner = text.partition(":")  # owners may contain ':', tokens never do
    if not sep or not token.isdigit() or not owner:
        raise ValueError(f"not a beat lock value: {text!r}")
    return int(token), owner


class BeatLock:
    """A Redis lock that one beat holds at a time, with a fencing token per acquisition.

    ``token`` is the fencing token of this instance's holding, or None when it holds nothing.
    It is cleared when a renew fails and on release, so a beat that lost the lock goes back to
    calling ``acquire`` (re-joining the election) instead of sending.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        key: str = BEAT_LOCK_KEY,
        owner: str,
        timeout: float,
        fence_key: str = BEAT_FENCE_KEY,
    ) -> None:
        if not key or not fence_key:
            raise ValueError("beat lock: key and fence_key must not be empty")
        if not owner:
            raise ValueError("beat lock: owner must not be empty")
        if not (math.isfinite(timeout) and timeout >= _MIN_TIMEOUT_S):
            raise ValueError(
                f"beat lock: timeout must be at least {_MIN_TIMEOUT_S} s, got {timeout}"
            )
        self.key = key
        self.fence_key = fence_key
        self.owner = owner
        self.timeout = timeout
        self.token: int | None = None
        self._client = client
        self._timeout_ms = max(1, round(timeout * 1000))
        # register_script only hashes the text; each call is EVALSHA (loading it on NOSCRIPT).
        self._acquire = client.register_script(_ACQUIRE_SCRIPT)
        self._renew = client.register_script(_RENEW_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)

    @property
    def renew_interval(self) -> float:
        """The longest a holder may wait between renewals (and the beat loop may sleep)."""
        return self.timeout * RENEW_FRACTION

    def acquire(self) -> bool:
        """Take the lock if it is free: True (and a new ``token``) when taken, else False."""
        token = int(
            cast(
                int,
                self._acquire(keys=[self.key, self.fence_key], args=[self.owner, self._timeout_ms]),
            )
        )
        if token <= 0:
            return False
        self.token = token
        return True

    def renew(self) -> bool:
        """Reset the lock's time to live if this holding still has it: False (and ``token``
        cleared) when another owner holds it, a newer acquisition does, or it expired."""
        if self.token is None:
            return False
        value = lock_value(self.token, self.owner)
        if int(cast(int, self._renew(keys=[self.key], args=[value, self._timeout_ms]))) == 1:
            return True
        self.token = None
        return False

    def release(self) -> bool:
        """Give the lock up if this holding still has it (True); someone else's is kept (False)."""
        if self.token is None:
            return False
        value = lock_value(self.token, self.owner)
        self.token = None
        return int(cast(int, self._release(keys=[self.key], args=[value]))) == 1

    def holder(self) -> str | None:
        """The owner holding the lock now (any beat, not only this one), or None when free."""
        value: bytes | str | None = self._client.get(self.key)
        return None if value is None else parse_lock_value(value)[1]
