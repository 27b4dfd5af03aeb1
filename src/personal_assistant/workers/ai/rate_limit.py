"""The cluster-wide limit on chat-completion requests: one GCRA limiter per model, in Redis.

Celery's ``rate_limit`` counts per worker process, so N workers would send N times the
provider's limit. Here every worker asks one Lua script in Redis before each request, so the
limit (AI_REQUESTS_PER_MINUTE) holds for the whole cluster.

GCRA (the generic cell rate algorithm) keeps one number per model: the theoretical arrival time
(TAT) of the next request. A request is allowed when the TAT is not in the future; it then
moves the TAT one emission interval (60 s / rate) on. No burst is allowed, so requests are
spaced evenly and no 60-second window, however aligned, holds more than the rate. The script
reads Redis's own clock (``TIME``), so the workers' clocks do not matter, and the check and
the update are one atomic step.
"""

from __future__ import annotations

from typing import cast

import redis

from personal_assistant.workers import keys

# KEYS[1]: the model's key. ARGV[1]: the emission interval in microseconds.
# Returns 0 (allowed, recorded) or the microseconds until the next request is allowed.
# Microseconds as Lua numbers (doubles) are exact up to 2**53 us, about 285 years after 1970;
# the TAT is written with %d because Lua's default number format keeps only 14 digits.
_GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat > now then
    return tat - now
end
-- Expires once idle: after the new TAT has passed, a missing key means the same as a stale one.
redis.call('SET', KEYS[1], string.format('%d', now + interval),
    'PX', string.format('%d', math.ceil(interval / 1000) + 1000))
return 0
"""

_MICROSECONDS = 1_000_000


def acquire(client: redis.Redis, model: str, per_minute: int) -> float:
    """Ask the cluster-wide limiter of ``model`` for one request: 0.0 when it may go now (and
    it is counted), else the seconds until one may (nothing counted). ``per_minute`` 0 means
    no limit (Redis is not asked)."""
    if per_minute <= 0:
        return 0.0
    interval_us = max(1, round(60 * _MICROSECONDS / per_minute))
    # register_script only hashes the text; the call is EVALSHA, loading the script on NOSCRIPT.
    script = client.register_script(_GCRA_SCRIPT)
    wait_us = cast(int, script(keys=[keys.ai_rate_limit_key(model)], args=[interval_us]))
    return int(wait_us) / _MICROSECONDS
