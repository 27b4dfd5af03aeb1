"""The channel dispatcher: a send never makes the caller wait, a dead channel delays no other,
failures are retried with backoff and counted once, the queue is bounded, one alert stays in
order. Against real loopback servers (a "dead" endpoint is a socket that accepts connections
and never answers, or a port nobody listens on) and scripted channels.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from personal_assistant.workers.alerting.channels.base import Channel, ChannelError, Notification
from personal_assistant.workers.alerting.channels.webhooks import WebhookChannel
from personal_assistant.workers.alerting.delivery import ChannelDispatcher
from tests.support.alert_channels import SECRET, BlackHole, HttpReceiver, ScriptedChannel, note
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

DEAD_TIMEOUT = 3.0  # how long a send to the black hole takes before it gives up


@pytest.fixture
def dispatchers() -> Iterator[list[ChannelDispatcher]]:
    """Dispatchers made by a test, closed at its end."""
    made: list[ChannelDispatcher] = []
    yield made
    for dispatcher in made:
        dispatcher.close(timeout=DEAD_TIMEOUT + 2)


class Counter:
    """failure_counter that records its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, channel: str) -> None:
        with self._lock:
            self.calls.append(channel)


def test_dispatch_returns_at_once_even_when_channels_are_dead(
    dispatchers: list[ChannelDispatcher],  # first: closed last, after the black hole
    http_receiver: HttpReceiver,
    black_hole: BlackHole,
) -> None:
    channels: dict[str, Channel] = {
        "hole": WebhookChannel(black_hole.url, SECRET, timeout=DEAD_TIMEOUT),
        "refused": WebhookChannel(f"http://127.0.0.1:{free_port()}/", SECRET),
        "healthy": WebhookChannel(http_receiver.url, SECRET),
    }
    dispatcher = ChannelDispatcher(channels, retries=1, backoff=0.05, workers=1)
    dispatchers.append(dispatcher)
    slowest = 0.0
    for i in range(50):
        started = time.perf_counter()
        dispatcher.dispatch(["hole", "refused", "healthy"], note(fingerprint=f"fp-{i}"))
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.05
    http_receiver.wait_for(50)


def test_a_dead_channel_does_not_delay_a_healthy_one(
    dispatchers: list[ChannelDispatcher],  # first: closed last, after the black hole
    http_receiver: HttpReceiver,
    black_hole: BlackHole,
) -> None:
    """With one thread per channel, a backlog of sends to a silent server delays nobody else."""
    counter = Counter()
    channels: dict[str, Channel] = {
        "dead": WebhookChannel(black_hole.url, SECRET, timeout=DEAD_TIMEOUT),
        "healthy": WebhookChannel(http_receiver.url, SECRET),
    }
    dispatcher = ChannelDispatcher(channels, retries=0, workers=1, failure_counter=counter)
    dispatchers.append(dispatcher)
    started = time.monotonic()
    for i in range(10):
        dispatcher.dispatch(["dead", "healthy"], note(fingerprint=f"fp-{i}"))
    received = http_receiver.wait_for(10)
    assert max(r.at for r in received) - started < DEAD_TIMEOUT / 3
    wait_for(lambda: dispatcher.stats()["healthy"].sent == 10, timeout=DEAD_TIMEOUT / 3)
    stats = dispatcher.stats()
    assert stats["dead"].sent == 0
    assert stats["dead"].pending + stats["dead"].in_flight == 10  # still waiting on the first
    assert counter.calls == []


def test_retries_back_off_then_count_one_failure_per_notification(
    dispatchers: list[ChannelDispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()
    channel = ScriptedChannel(fail_times=100)
    dispatcher = ChannelDispatcher(
        {"flaky": channel},
        retries=3,
        backoff=0.1,
        max_backoff=0.2,
        workers=1,
        failure_counter=counter,
    )
    dispatchers.append(dispatcher)
    with caplog.at_level(logging.DEBUG, logger="personal_assistant.workers.alerting.delivery"):
        dispatcher.dispatch(["flaky"], note(fingerprint="a"))
        dispatcher.dispatch(["flaky"], note(fingerprint="b"))
        assert dispatcher.flush(timeout=10)

    assert counter.calls == ["flaky", "flaky"]
    times = [t for fp, t in channel.attempts if fp == "a"]
    assert len(times) == 4  # 1 + 3 retries
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Backoff with jitter: attempt k waits within [d/2, d], d = 0.1 * 2^(k-1) capped at 0.2.
    for gap, ceiling in zip(gaps, [0.1, 0.2, 0.2], strict=True):
        assert ceiling / 2 <= gap < ceiling + 1.0
    finals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(finals) == 2  # logged once per notification, not once per attempt
    assert "after 4 attempt(s): boom" in finals[0].getMessage()
    assert dispatcher.stats()["flaky"].failed == 2


def test_real_server_errors_are_retried_and_counted_once(
    http_receiver: HttpReceiver, dispatchers: list[ChannelDispatcher]
) -> None:
    http_receiver.status = 503
    counter = Counter()
    dispatcher = ChannelDispatcher(
        {"webhook": WebhookChannel(http_receiver.url, SECRET)},
        retries=2,
        backoff=0.01,
        failure_counter=counter,
    )
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["webhook"], note(fingerprint="a"))
    dispatcher.dispatch(["webhook"], note(fingerprint="b"))
    assert dispatcher.flush(timeout=10)
    assert len(http_receiver.requests) == 6
    assert counter.calls == ["webhook", "webhook"]


def test_a_transient_failure_is_retried_to_success(dispatchers: list[ChannelDispatcher]) -> None:
    counter = Counter()
    channel = ScriptedChannel(fail_times=2, error=OSError("connection reset"))
    dispatcher = ChannelDispatcher({"c": channel}, retries=3, backoff=0.01, failure_counter=counter)
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["c"], note())
    assert dispatcher.flush(timeout=10)
    assert len(channel.attempts) == 3
    assert channel.delivered == [note()]
    assert counter.calls == []
    assert dispatcher.stats()["c"].sent == 1


def test_a_non_retryable_error_is_not_retried(dispatchers: list[ChannelDispatcher]) -> None:
    counter = Counter()
    channel = ScriptedChannel(fail_times=5, error=ChannelError("bad token", retryable=False))
    dispatcher = ChannelDispatcher({"c": channel}, retries=3, backoff=0.01, failure_counter=counter)
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["c"], note())
    assert dispatcher.flush(timeout=10)
    assert len(channel.attempts) == 1
    assert counter.calls == ["c"]


def test_unknown_channels_are_logged_and_counted(
    dispatchers: list[ChannelDispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()
    channel = ScriptedChannel()
    dispatcher = ChannelDispatcher({"known": channel}, failure_counter=counter)
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["nope", "known", "known"], note())
    assert dispatcher.flush(timeout=10)
    assert counter.calls == ["nope"]
    assert channel.delivered == [note()]  # duplicates in the list send once
    assert any("unknown channel 'nope'" in r.getMessage() for r in caplog.records)


def test_the_queue_is_bounded_and_drops_the_oldest(dispatchers: list[ChannelDispatcher]) -> None:
    gate = threading.Event()
    counter = Counter()
    channel = ScriptedChannel(gate=gate)
    dispatcher = ChannelDispatcher(
        {"slow": channel}, workers=1, queue_size=3, failure_counter=counter
    )
    dispatchers.append(dispatcher)
    try:
        dispatcher.dispatch(["slow"], note(fingerprint="n0"))
        wait_for(lambda: dispatcher.stats()["slow"].in_flight == 1, timeout=5)
        for i in range(1, 7):
            dispatcher.dispatch(["slow"], note(fingerprint=f"n{i}"))
        stats = dispatcher.stats()["slow"]
        assert (stats.pending, stats.dropped) == (3, 3)
        assert counter.calls == ["slow"] * 3
    finally:
        gate.set()
    assert dispatcher.flush(timeout=10)
    assert [n.fingerprint for n in channel.delivered] == ["n0", "n4", "n5", "n6"]


def test_one_alert_stays_in_order_while_others_overtake(
    dispatchers: list[ChannelDispatcher],
) -> None:
    gate = threading.Event()

    class GatedForA(ScriptedChannel):
        def send(self, n: Notification) -> None:
            if n.fingerprint == "A" and n.state == "firing":
                assert gate.wait(30)
            super().send(n)

    channel = GatedForA()
    dispatcher = ChannelDispatcher({"c": channel}, workers=4)
    dispatchers.append(dispatcher)
    try:
        dispatcher.dispatch(["c"], note(fingerprint="A", state="firing"))
        dispatcher.dispatch(["c"], note(fingerprint="A", state="resolved"))
        dispatcher.dispatch(["c"], note(fingerprint="B"))
        # B goes out on another thread while A's firing is stuck; A's resolved waits for it.
        wait_for(lambda: [n.fingerprint for n in channel.delivered] == ["B"], timeout=5)
        assert dispatcher.stats()["c"].pending == 1
    finally:
        gate.set()
    assert dispatcher.flush(timeout=10)
    assert [(n.fingerprint, n.state) for n in channel.delivered] == [
        ("B", "firing"),
        ("A", "firing"),
        ("A", "resolved"),
    ]


def test_flush_times_out_and_close_counts_what_was_left(
    dispatchers: list[ChannelDispatcher],
) -> None:
    gate = threading.Event()
    counter = Counter()
    channel = ScriptedChannel(gate=gate)
    dispatcher = ChannelDispatcher({"c": channel}, workers=1, failure_counter=counter)
    dispatchers.append(dispatcher)
    for i in range(3):
        dispatcher.dispatch(["c"], note(fingerprint=f"n{i}"))
    assert not dispatcher.flush(timeout=0.2)
    try:
        # n0 is in flight (stuck); n1 and n2 wait: close() drops and counts them.
        dispatcher.close(timeout=0.1)
        assert counter.calls == ["c", "c"]
        assert dispatcher.stats()["c"].dropped == 2
        dispatcher.dispatch(["c"], note())  # after close: counted, not raised
        assert counter.calls == ["c", "c", "c"]
    finally:
        gate.set()
    wait_for(lambda: channel.delivered, timeout=5)  # the send in flight still completes
    assert [n.fingerprint for n in channel.delivered] == ["n0"]
    dispatcher.close()  # idempotent


def test_a_raising_failure_counter_breaks_nothing(dispatchers: list[ChannelDispatcher]) -> None:
    def counter(channel: str) -> None:
        raise RuntimeError("metrics down")

    channel = ScriptedChannel(fail_times=1)
    dispatcher = ChannelDispatcher({"c": channel}, retries=0, failure_counter=counter, workers=1)
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["nope"], note())
    dispatcher.dispatch(["c"], note(fingerprint="1"))
    dispatcher.dispatch(["c"], note(fingerprint="2"))
    assert dispatcher.flush(timeout=10)
    assert [n.fingerprint for n in channel.delivered] == ["2"]


@pytest.mark.parametrize(
    "kwargs",
    [{"retries": -1}, {"backoff": -1}, {"backoff": 2, "max_backoff": 1}, {"workers": 0}],
)
def test_dispatcher_refuses_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ChannelDispatcher({}, **kwargs)
