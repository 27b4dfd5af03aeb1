"""Backoff with equal jitter: each delay between the capped half and whole doubling, never
shrinking from one retry to the next."""

from __future__ import annotations

import random

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.backoff import backoff_delay


class Extreme(random.Random):
    """A random source that always draws the low (or high) end of ``uniform``."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def bounds(retries: int, base: float, maximum: float) -> tuple[float, float]:
    """The smallest and the largest delay backoff_delay can give for this retry."""
    low = backoff_delay(retries, base=base, maximum=maximum, rng=Extreme(high=False))
    high = backoff_delay(retries, base=base, maximum=maximum, rng=Extreme(high=True))
    return low, high


@pytest.mark.parametrize(("base", "maximum"), [(2.0, 600.0), (0.5, 30.0), (3.0, 3600.0)])
def test_each_backoff_delay_lies_between_the_capped_half_and_whole_doubling(
    base: float, maximum: float
) -> None:
    rng = random.Random(1234)
    for retries in range(16):
        ceiling = min(maximum, base * 2**retries)
        floor = min(maximum, base * 2**retries / 2)
        draws = [backoff_delay(retries, base=base, maximum=maximum, rng=rng) for _ in range(500)]
        assert min(draws) >= floor
        assert max(draws) <= ceiling
        # The jitter is real below the cap: draws spread over the interval.
        if ceiling > floor:
            assert max(draws) - min(draws) > (ceiling - floor) / 2


def test_a_negative_retry_count_gets_the_first_delay() -> None:
    assert bounds(-3, base=2.0, maximum=600.0) == bounds(0, base=2.0, maximum=600.0) == (1.0, 2.0)


def test_backoff_delays_never_shrink_over_the_configured_retries() -> None:
    base, maximum = c.RETRY_BACKOFF_BASE_S, c.RETRY_BACKOFF_MAX_S
    for retries in range(c.TASK_MAX_RETRIES):
        _, upper = bounds(retries, base, maximum)
        lower_next, _ = bounds(retries + 1, base, maximum)
        assert lower_next >= upper, f"retry {retries + 1} may wait less than retry {retries}"


def test_backoff_delays_never_shrink_when_the_cap_is_reached() -> None:
    base, maximum = c.RETRY_BACKOFF_BASE_S, c.RETRY_BACKOFF_MAX_S
    for retries in range(12):
        _, upper = bounds(retries, base, maximum)
        lower_next, _ = bounds(retries + 1, base, maximum)
        assert lower_next >= upper, f"retry {retries + 1} may wait less than retry {retries}"
