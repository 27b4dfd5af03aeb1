"""The M/M/c maths of utils/queueing.py, against cases computed by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from personal_assistant.workers.utils.queueing import (
    erlang_b,
    erlang_c,
    littles_law,
    mmc,
    servers_to_drain,
    smallest_servers,
)

# The hand-computed case: lambda = 8 tasks/s, mean run 0.5 s (mu = 2 /s), c = 5 slots.
#
#   offered load a = lambda / mu = 8 / 2 = 4;  utilisation rho = a / c = 4 / 5 = 0.8
#
#   Erlang B by the recursion B(k) = a B(k-1) / (k + a B(k-1)), B(0) = 1:
#     B(1) = 4 * 1         / (1 + 4)          = 4/5           = 0.8
#     B(2) = 4 * 0.8       / (2 + 3.2)        = 3.2/5.2       = 0.615384615
#     B(3) = 4 * 0.615385  / (3 + 2.461538)   = 2.461538/5.461538 = 0.450704225
#     B(4) = 4 * 0.450704  / (4 + 1.802817)   = 1.802817/5.802817 = 0.310679612
#     B(5) = 4 * 0.310680  / (5 + 1.242718)   = 1.242718/6.242718 = 0.199066874
#   which is the closed form (a^5/5!) / sum_{k=0..5} a^k/k!:
#     terms a^k/k!: 1, 4, 8, 32/3, 32/3, 128/15 -> sum 643/15; B = (128/15)/(643/15) = 128/643
#
#   Erlang C = c B / (c - a (1 - B)) = 5 * 0.199066874 / (5 - 4 * 0.800933126)
#            = 0.995334370 / 1.796267496 = 0.554112554   (exactly 128/231)
#   mean wait Wq = C / (c mu - lambda) = 0.554112554 / (10 - 8) = 0.277056277 s
#   P(wait > t) = C e^-(c mu - lambda) t: P(wait > 1 s) = 0.554112554 * e^-2 = 0.074990...
#   p95 wait: C e^-2t = 0.05 -> t = ln(0.554112554 / 0.05) / 2 = ln(11.08225108) / 2
#            = 2.405345 / 2 = 1.202672 s
#   Little's law: queued Lq = lambda Wq = 8 * 0.277056277 = 2.216450216 (= 512/231),
#     running = a = 4, in the system L = 6.216450216; W = Wq + 1/mu = 0.777056277 s
#
# With one more slot (c = 6): terms up to k = 5 sum to 643/15, a^6/6! = 256/45,
#   C = (256/45 * 6/2) / (643/15 + 256/45 * 6/2) = (256/15) / (899/15) = 256/899 = 0.284760845
#   p95 wait = ln(0.284760845 / 0.05) / (12 - 8) = ln(5.69521690) / 4 = 0.434907 s
LAMBDA, RUN, C = 8.0, 0.5, 5


def test_erlang_b_follows_the_recursion_computed_by_hand() -> None:
    assert erlang_b(1, 4.0) == pytest.approx(0.8, abs=1e-9)
    assert erlang_b(2, 4.0) == pytest.approx(0.615384615, abs=1e-6)
    assert erlang_b(3, 4.0) == pytest.approx(0.450704225, abs=1e-6)
    assert erlang_b(4, 4.0) == pytest.approx(0.310679612, abs=1e-6)
    assert erlang_b(5, 4.0) == pytest.approx(128 / 643, abs=1e-12)


def test_erlang_c_of_the_hand_computed_case() -> None:
    assert erlang_c(5, 4.0) == pytest.approx(0.554112554, abs=1e-6)
    assert erlang_c(5, 4.0) == pytest.approx(128 / 231, abs=1e-12)
    assert erlang_c(6, 4.0) == pytest.approx(256 / 899, abs=1e-12)


def test_mmc_gives_load_utilisation_wait_and_tail_of_the_hand_computed_case() -> None:
    queue = mmc(LAMBDA, RUN, C)
    assert queue.offered_load == pytest.approx(4.0)
    assert queue.utilisation == pytest.approx(0.8)
    assert queue.p_wait == pytest.approx(0.554112554, abs=1e-6)
    assert queue.mean_wait == pytest.approx(0.277056277, abs=1e-6)
    assert queue.wait_exceeds(1.0) == pytest.approx(0.554112554 * math.exp(-2), abs=1e-6)
    assert queue.wait_quantile(0.95) == pytest.approx(1.202672, abs=1e-6)
    assert queue.stable


def test_littles_law_gives_running_queued_and_in_system_tasks() -> None:
    queue = mmc(LAMBDA, RUN, C)
    assert queue.in_service == pytest.approx(4.0)
    assert queue.queue_length == pytest.approx(512 / 231, abs=1e-9)
    assert queue.in_system == pytest.approx(6.216450216, abs=1e-6)
    # L = lambda W with W = Wq + 1/mu: the same count from the time in the system.
    assert littles_law(LAMBDA, queue.mean_wait + RUN) == pytest.approx(queue.in_system)


def test_one_more_slot_cuts_the_wait_as_computed_by_hand() -> None:
    queue = mmc(LAMBDA, RUN, 6)
    assert queue.p_wait == pytest.approx(0.284760845, abs=1e-6)
    assert queue.wait_quantile(0.95) == pytest.approx(0.434907, abs=1e-6)


def test_an_overloaded_queue_has_no_steady_state() -> None:
    """lambda >= c mu: every task waits and the queue grows without bound."""
    queue = mmc(LAMBDA, RUN, 4)  # a = 4 = c
    assert not queue.stable
    assert queue.p_wait == 1.0
    assert math.isinf(queue.mean_wait)
    assert math.isinf(queue.wait_quantile(0.95))
    assert queue.wait_exceeds(3600) == 1.0
    data = queue.to_dict()
    assert data["mean_wait"] is None and data["quantile_wait"] is None
    assert data["stable"] is False


def test_no_traffic_means_no_wait_and_no_division_by_zero() -> None:
    queue = mmc(0.0, RUN, 1)
    assert (queue.p_wait, queue.mean_wait, queue.queue_length) == (0.0, 0.0, 0.0)
    assert queue.wait_quantile(0.95) == 0.0


def test_smallest_servers_meets_the_target_and_one_fewer_does_not() -> None:
    # Target 1 s at p95: c=5 waits 1.20 s (too long), c=6 waits 0.43 s.
    queue = smallest_servers(LAMBDA, RUN, max_utilisation=0.8, target_wait=1.0, quantile=0.95)
    assert queue.servers == 6
    assert mmc(LAMBDA, RUN, 5).wait_quantile(0.95) > 1.0
    # Target 1.5 s: c=5 (rho exactly 0.8 is allowed) meets it; c=4 is overloaded.
    queue = smallest_servers(LAMBDA, RUN, max_utilisation=0.8, target_wait=1.5, quantile=0.95)
    assert queue.servers == 5
    assert not mmc(LAMBDA, RUN, 4).stable


def test_smallest_servers_respects_the_utilisation_limit_before_the_wait() -> None:
    # A generous target: the limit alone decides, c = ceil(4 / 0.5) = 8.
    queue = smallest_servers(LAMBDA, RUN, max_utilisation=0.5, target_wait=3600, quantile=0.95)
    assert queue.servers == 8
    assert queue.utilisation == pytest.approx(0.5)


def test_erlang_c_holds_for_thousands_of_servers() -> None:
    """The textbook formula's a**c / c! overflows a float past c = 170; the recursion holds."""
    queue = smallest_servers(2000.0, 1.0, max_utilisation=0.8, target_wait=1.0, quantile=0.95)
    assert queue.servers == 2500
    assert 0.0 <= queue.p_wait < 1e-6
    assert 0.0 < erlang_c(2001, 2000.0) < 1.0


def test_servers_to_drain_clears_the_backlog_within_the_horizon() -> None:
    # 30,000 waiting at lambda 8/s, runs of 0.5 s, in 900 s: (8 + 33.3) * 0.5 = 20.67 -> 21.
    needed = servers_to_drain(LAMBDA, RUN, 30_000, 900)
    assert needed == 21
    assert (needed / RUN - LAMBDA) * 900 >= 30_000
    assert ((needed - 1) / RUN - LAMBDA) * 900 < 30_000


@pytest.mark.parametrize(
    ("arrival", "run", "servers"),
    [(-1.0, 0.5, 1), (1.0, 0.0, 1), (1.0, math.nan, 1), (math.inf, 0.5, 1), (1.0, 0.5, 0)],
)
def test_mmc_rejects_impossible_inputs(arrival: float, run: float, servers: int) -> None:
    with pytest.raises(ValueError):
        mmc(arrival, run, servers)


@given(
    load=st.floats(min_value=0.01, max_value=200.0),
    extra=st.integers(min_value=1, max_value=40),
)
def test_erlang_c_is_a_probability_that_falls_as_slots_are_added(load: float, extra: int) -> None:
    servers = math.floor(load) + extra  # stable: c > a
    now, more = erlang_c(servers, load), erlang_c(servers + 1, load)
    assert 0.0 <= more <= now <= 1.0
    wait_now = mmc(load, 1.0, servers).mean_wait
    wait_more = mmc(load, 1.0, servers + 1).mean_wait
    assert wait_more <= wait_now
