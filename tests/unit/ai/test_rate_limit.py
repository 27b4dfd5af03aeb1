"""The cluster-wide AI request limiter on a real Redis: requests are spaced by 60 s / rate, a
refused request is not counted, models are limited separately, and several clients hammering
it at once together never exceed the rate."""

from __future__ import annotations

import threading
import time

import redis

from personal_assistant.workers import keys
from personal_assistant.workers.ai.rate_limit import acquire


def test_a_rate_of_zero_means_no_limit_and_no_redis_state(redis_client: redis.Redis) -> None:
    assert [acquire(redis_client, "m", 0) for _ in range(100)] == [0.0] * 100
    assert redis_client.exists(keys.ai_rate_limit_key("m")) == 0


def test_a_second_request_within_the_interval_is_told_how_long_to_wait(
    redis_client: redis.Redis,
) -> None:
    assert acquire(redis_client, "m", 60) == 0.0

    wait = acquire(redis_client, "m", 60)

    assert 0.9 < wait <= 1.0
    # The state expires once the model is idle.
    assert 0 < redis_client.pttl(keys.ai_rate_limit_key("m")) <= 2000


def test_a_refused_request_is_not_counted(redis_client: redis.Redis) -> None:
    assert acquire(redis_client, "m", 600) == 0.0  # one request per 0.1 s
    first_wait = acquire(redis_client, "m", 600)
    second_wait = acquire(redis_client, "m", 600)

    # Had the refusals been counted, each would push the next slot 0.1 s further out.
    assert 0 < second_wait <= first_wait <= 0.1
    time.sleep(first_wait)
    assert acquire(redis_client, "m", 600) == 0.0


def test_models_are_limited_separately(redis_client: redis.Redis) -> None:
    assert acquire(redis_client, "small", 1) == 0.0
    assert acquire(redis_client, "large", 1) == 0.0
    assert acquire(redis_client, "small", 1) > 50


def test_clients_hammering_the_limiter_at_once_never_exceed_the_rate_together(
    redis_url: str,
) -> None:
    per_minute = 1200  # one request per 50 ms
    window = 1.0
    allowed: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def hammer() -> None:
        client = redis.Redis.from_url(redis_url)  # its own connection, as another worker's
        start.wait()
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            if acquire(client, "shared", per_minute) == 0.0:
                with lock:
                    allowed.append(time.monotonic())
        client.close()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Evenly spaced: at most one per 50 ms (+1 for the first at the window's start), and the
    # limiter does let that many through rather than starving the clients.
    limit = int(window * per_minute / 60) + 1
    assert 0.75 * limit <= len(allowed) <= limit
