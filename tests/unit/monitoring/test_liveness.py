"""Worker liveness (the registry and the heartbeat thread) and beat liveness, on a real Redis."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.monitoring.liveness import (
    BeatLiveness,
    Heartbeat,
    WorkerRegistry,
)
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

T0 = 1_700_000_000.0


# --- Worker registry ----------------------------------------------------------------------------


@pytest.fixture
def registry(redis_client: redis.Redis) -> WorkerRegistry:
    return WorkerRegistry(redis_client, down_after=30.0, retention=3600.0)


def test_a_beating_worker_is_up_and_described(registry: WorkerRegistry) -> None:
    registry.beat(
        "w1@host", queues=[c.FILE_QUEUE, c.AI_QUEUE], pid=4242, now=T0, extra={"active": 2}
    )

    [worker] = registry.workers(now=T0 + 1)

    assert worker.hostname == "w1@host"
    assert worker.up is True
    assert worker.state == "up"
    assert worker.last_seen == T0
    assert worker.age_seconds == pytest.approx(1.0)
    assert worker.queues == [c.FILE_QUEUE, c.AI_QUEUE]
    assert worker.pid == 4242
    assert worker.extra == {"active": 2}
    assert worker.started_at == T0
    assert worker.stopped is False
    assert json.loads(json.dumps(worker.to_dict()))["state"] == "up"


def test_up_until_down_after_then_down(registry: WorkerRegistry) -> None:
    registry.beat("w1@host", queues=[c.FILE_QUEUE], pid=1, now=T0)

    assert registry.workers(now=T0 + 30.0)[0].up is True
    later = registry.workers(now=T0 + 30.5)[0]
    assert later.up is False
    assert later.state == "down"
    assert later.age_seconds == pytest.approx(30.5)


def test_started_at_survives_beats_and_resets_with_a_new_process(
    registry: WorkerRegistry,
) -> None:
    registry.beat("w1@host", queues=[c.FILE_QUEUE], pid=100, now=T0)
    registry.beat("w1@host", queues=[c.FILE_QUEUE], pid=100, now=T0 + 5)
    assert registry.workers(now=T0 + 5)[0].started_at == T0

    registry.beat("w1@host", queues=[c.FILE_QUEUE], pid=200, now=T0 + 60)  # restarted
    [worker] = registry.workers(now=T0 + 60)
    assert worker.started_at == T0 + 60
    assert worker.pid == 200


def test_a_killed_worker_shows_down_in_time_and_stays_listed_until_retention(
    redis_client: redis.Redis,
) -> None:
    """SIGKILL runs no shutdown code: the beats just stop. Simulated with injected clocks."""
    interval, down_after, retention = 5.0, 30.0, 86_400.0
    registry = WorkerRegistry(redis_client, down_after=down_after, retention=retention)
    t = T0
    while t < T0 + 60:  # both beat for a minute
        registry.beat("victim@host", queues=[c.FILE_QUEUE], pid=1, now=t)
        registry.beat("survivor@host", queues=[c.FILE_QUEUE], pid=2, now=t)
        t += interval
    killed_at = t  # victim's next beat never comes
    while t <= killed_at + down_after + interval:
        registry.beat("survivor@host", queues=[c.FILE_QUEUE], pid=2, now=t)
        t += interval

    def state(now: float) -> dict[str, bool]:
        return {w.hostname: w.up for w in registry.workers(now=now)}

    assert state(killed_at) == {"victim@host": True, "survivor@host": True}
    # Down at the latest down_after + one interval after the kill.
    assert state(killed_at + down_after + interval)["victim@host"] is False
    # Still listed (as down) long past an alert's `for: 5m`, and hours later.
    assert state(killed_at + down_after + interval + 300) == {
        "victim@host": False,
        "survivor@host": False,
    }
    assert "victim@host" in state(killed_at + 6 * 3600)
    # Pruned once silent for longer than the retention, key and all.
    assert state(killed_at - interval + retention + 1) == {"survivor@host": False}
    assert redis_client.zscore(keys.WORKERS_SEEN_KEY, "victim@host") is None


def test_info_expires_with_the_retention(
    registry: WorkerRegistry, redis_client: redis.Redis
) -> None:
    registry.beat("w1@host", queues=[c.FILE_QUEUE], pid=1, now=T0)
    ttl = int(redis_client.ttl(registry.info_key("w1@host")))
    assert 3590 <= ttl <= 3600


def test_a_beat_prunes_long_silent_workers_even_if_nobody_reads(
    registry: WorkerRegistry, redis_client: redis.Redis
) -> None:
    registry.beat("old@host", queues=[c.FILE_QUEUE], pid=1, now=T0)
    registry.beat("new@host", queues=[c.FILE_QUEUE], pid=2, now=T0 + 3601)
    assert redis_client.zrange(keys.WORKERS_SEEN_KEY, 0, -1) == [b"new@host"]


def test_forget_marks_a_clean_stop_that_exporters_do_not_list(registry: WorkerRegistry) -> None:
    registry.beat("w1@host", queues=[c.FILE_QUEUE], pid=1, now=T0)
    registry.beat("w2@host", queues=[c.FILE_QUEUE], pid=2, now=T0)
    registry.forget("w1@host", now=T0 + 1)

    assert [w.hostname for w in registry.workers(now=T0 + 2)] == ["w2@host"]
    stopped = registry.workers(now=T0 + 2, include_stopped=True)[0]
    assert (stopped.hostname, stopped.up, stopped.stopped, stopped.state) == (
        "w1@host",
        False,
        True,
        "stopped",
    )
    assert stopped.queues == [c.FILE_QUEUE]  # details kept for `status`

    registry.beat("w1@host", queues=[c.FILE_QUEUE], pid=3, now=T0 + 10)  # started again
    again = {w.hostname: w for w in registry.workers(now=T0 + 10)}
    assert again["w1@host"].up is True
    assert again["w1@host"].stopped is False
    assert again["w1@host"].started_at == T0 + 10


def test_remove_drops_every_trace(registry: WorkerRegistry, redis_client: redis.Redis) -> None:
    registry.beat("w1@host", queues=[c.FILE_QUEUE], pid=1, now=T0)
    registry.remove("w1@host")
    assert registry.workers(now=T0, include_stopped=True) == []
    assert not redis_client.exists(registry.info_key("w1@host"))


def test_retention_must_exceed_down_after(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="down_after < retention"):
        WorkerRegistry(redis_client, down_after=60, retention=60)


# --- Heartbeat thread ---------------------------------------------------------------------------


def test_a_heartbeat_thread_beats_until_stopped(registry: WorkerRegistry) -> None:
    heartbeat = Heartbeat(
        registry, "hb@host", [c.SYNC_QUEUE], interval=0.05, extra=lambda: {"active": 1}
    ).start()
    try:
        wait_for(lambda: heartbeat.beats >= 3, timeout=10)
        [worker] = registry.workers()
        assert (worker.hostname, worker.up, worker.queues) == ("hb@host", True, [c.SYNC_QUEUE])
        assert worker.extra == {"active": 1}
        assert heartbeat.alive
        assert heartbeat.start() is heartbeat  # idempotent
        since = heartbeat.seconds_since_beat()
        assert since is not None
        assert since < 10
    finally:
        heartbeat.stop()
    assert not heartbeat.alive
    beats = heartbeat.beats
    time.sleep(0.2)
    assert heartbeat.beats == beats
    heartbeat.stop()  # twice is fine


def test_a_heartbeat_survives_an_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    dead = redis.Redis(
        host="127.0.0.1",
        port=free_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    heartbeat = Heartbeat(WorkerRegistry(dead), "lost@host", [c.FILE_QUEUE], interval=0.02)
    with caplog.at_level(logging.WARNING, "personal_assistant.workers.monitoring.liveness"):
        heartbeat.start()
        try:
            wait_for(lambda: heartbeat.failures >= 3, timeout=20)
            assert heartbeat.alive
            assert heartbeat.last_error is not None
            assert heartbeat.seconds_since_beat() is None
        finally:
            heartbeat.stop()
    # One warning per outage, not one per attempt.
    warnings = [r for r in caplog.records if "heartbeat of lost@host failed" in r.getMessage()]
    assert len(warnings) == 1


class FlakyRegistry(WorkerRegistry):
    """A registry whose first ``failures`` beats raise."""

    def __init__(self, client: redis.Redis, failures: int) -> None:
        super().__init__(client)
        self.remaining = failures

    def beat(self, hostname: str, **kwargs: Any) -> None:
        if self.remaining > 0:
            self.remaining -= 1
            raise redis.ConnectionError("broker restarting")
        super().beat(hostname, **kwargs)


def test_a_heartbeat_recovers_and_says_so(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FlakyRegistry(redis_client, failures=2)
    heartbeat = Heartbeat(registry, "flaky@host", [c.FILE_QUEUE], interval=0.02)
    with caplog.at_level(logging.INFO, "personal_assistant.workers.monitoring.liveness"):
        heartbeat.start()
        try:
            wait_for(lambda: heartbeat.beats >= 1, timeout=10)
        finally:
            heartbeat.stop()
    assert heartbeat.failures == 2
    assert heartbeat.last_error is None
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert [w.hostname for w in registry.workers()] == ["flaky@host"]


def test_health_follows_the_thread_and_the_consumer_loop(registry: WorkerRegistry) -> None:
    heartbeat = Heartbeat(registry, "h@host", [c.FILE_QUEUE], interval=0.05)
    ok, reason = heartbeat.health(max_silence=60)
    assert (ok, reason) == (False, "heartbeat thread is not running")
    heartbeat.start()
    try:
        assert heartbeat.health(max_silence=60) == (True, "ok")
        time.sleep(0.2)
        ok, reason = heartbeat.health(max_silence=0.1)
        assert not ok
        assert "consumer loop has not moved" in reason
        heartbeat.touch()
        assert heartbeat.seconds_since_touch() < 60
        assert heartbeat.health(max_silence=60) == (True, "ok")
    finally:
        heartbeat.stop()


def test_heartbeat_interval_must_be_positive(registry: WorkerRegistry) -> None:
    with pytest.raises(ValueError, match="interval"):
        Heartbeat(registry, "h@host", [c.FILE_QUEUE], interval=0)


# --- Beat liveness ------------------------------------------------------------------------------


def test_beat_liveness_age(redis_client: redis.Redis) -> None:
    beat = BeatLiveness(redis_client)
    assert beat.age() is None
    assert beat.last_tick() is None
    beat.tick(now=T0)
    assert beat.age(now=T0 + 42.5) == pytest.approx(42.5)
    assert beat.age(now=T0 - 5) == 0.0  # clock skew never makes it negative
    beat.tick()
    age = beat.age()
    assert age is not None
    assert age < 5
    assert redis_client.exists(keys.BEAT_TICK_KEY)
