"""Real ``celery beat`` processes on a real Redis: two beats send a 1-second entry exactly once
per second; SIGKILL of the active beat hands over within the lock timeout with no double send;
a restarted beat does not repeat a run; beat serves its entries and lock holder on /metrics."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import keys
from personal_assistant.workers.schedulers.beat_entry import entry_from_data
from personal_assistant.workers.schedulers.entry_store import EntryStore
from tests.support.beat import entry_data, sent_runs
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOCK_TIMEOUT_S = 3.0
# A standby ticks every third of the lock timeout: it takes over at most this long after the
# holder's last renewal, and the holder renewed at most a third of the timeout before dying.
HANDOVER_BOUND_S = LOCK_TIMEOUT_S + LOCK_TIMEOUT_S / 3 + 1.0


class Beat:
    """A ``celery beat`` process of the deployment's app."""

    def __init__(self, redis_url: str, workdir: Path, name: str, metrics_port: int = 0) -> None:
        self.log = workdir / f"{name}.log"
        env = worker_env(
            redis_url,
            {"BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT_S), "BEAT_METRICS_PORT": str(metrics_port)},
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "personal_assistant.workers.celery_app",
                    "beat",
                    "-l",
                    "info",
                ],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        """The beat's process id."""
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: a clean stop that releases the lock; SIGKILL: a crash)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def beats(redis_url: str, tmp_path: Path) -> Iterator[list[Beat]]:
    """Beats started by the test (appended by ``start``), all stopped after it."""
    started: list[Beat] = []
    yield started
    for beat in started:
        beat.stop(signal.SIGKILL)


def start(beats: list[Beat], redis_url: str, tmp_path: Path, metrics_port: int = 0) -> Beat:
    """Start one more beat."""
    beat = Beat(redis_url, tmp_path, f"beat-{len(beats)}", metrics_port)
    beats.append(beat)
    return beat


def holder_pid(client: redis.Redis) -> int | None:
    """The pid of the beat holding the lock (its owner is host:pid:suffix)."""
    value: bytes | None = client.get(keys.BEAT_LOCK_KEY)  # type: ignore[assignment]
    return None if value is None else int(value.decode().split(":")[-2])


def every_second_entry(client: redis.Redis) -> None:
    """Add the 1-second entry the tests count (as `schedule add` would)."""
    EntryStore(client).add(entry_from_data("ping", entry_data()))


def ping_dues(client: redis.Redis) -> list[float]:
    """The due times of the 1-second entry's runs sent so far, in order."""
    return sorted(run.due for run in sent_runs(client) if run.entry == "ping")


def two_beats_sending(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, beats: list[Beat], runs: int
) -> None:
    """The 1-second entry, two beats started, and ``runs`` of its runs sent."""
    every_second_entry(redis_client)
    start(beats, redis_url, tmp_path)
    start(beats, redis_url, tmp_path)
    wait_for(lambda: len(ping_dues(redis_client)) >= runs, timeout=30)


def test_two_beats_send_the_one_second_entry_exactly_once_per_second(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, beats: list[Beat]
) -> None:
    two_beats_sending(redis_url, redis_client, tmp_path, beats, runs=1)
    first = ping_dues(redis_client)[0]

    time.sleep(8)

    dues = [due for due in ping_dues(redis_client) if due <= first + 7]
    assert dues == [first + k for k in range(8)]  # each second once: none twice, none missed
    assert holder_pid(redis_client) in {beat.pid for beat in beats}


def test_killing_the_active_beat_hands_over_within_the_lock_timeout_without_a_double_send(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, beats: list[Beat]
) -> None:
    two_beats_sending(redis_url, redis_client, tmp_path, beats, runs=2)
    active = next(beat for beat in beats if beat.pid == holder_pid(redis_client))

    active.stop(signal.SIGKILL)
    killed_at = time.time()
    standby = next(beat for beat in beats if beat is not active)
    wait_for(lambda: holder_pid(redis_client) == standby.pid, timeout=HANDOVER_BOUND_S + 2)
    taken_over_after = time.time() - killed_at
    time.sleep(3)

    dues = ping_dues(redis_client)
    assert len(dues) == len(set(dues))  # no run sent twice
    assert taken_over_after <= HANDOVER_BOUND_S
    gaps = [later - earlier for earlier, later in itertools.pairwise(dues)]
    assert max(gaps) <= HANDOVER_BOUND_S + 1  # nothing missed beyond the handover
    assert sum(gap > 1.0 for gap in gaps) == 1  # one gap, the handover's; every second after
    assert dues[-1] >= time.time() - 2


def test_a_restarted_beat_does_not_repeat_a_run_already_sent(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, beats: list[Beat]
) -> None:
    every_second_entry(redis_client)
    first = start(beats, redis_url, tmp_path)
    wait_for(lambda: len(ping_dues(redis_client)) >= 3, timeout=30)
    first.stop(signal.SIGTERM)
    before = ping_dues(redis_client)

    start(beats, redis_url, tmp_path)
    wait_for(lambda: len(ping_dues(redis_client)) >= len(before) + 2, timeout=30)

    dues = ping_dues(redis_client)
    assert dues[: len(before)] == before
    assert len(dues) == len(set(dues))  # nothing sent again
    assert min(dues[len(before) :]) > max(before)


def test_beat_serves_its_entries_runs_and_the_lock_holder_on_metrics(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, beats: list[Beat]
) -> None:
    every_second_entry(redis_client)
    port = free_port()
    beat = start(beats, redis_url, tmp_path, metrics_port=port)
    wait_for(lambda: len(ping_dues(redis_client)) >= 2, timeout=30)

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()

    lines = text.splitlines()
    held = [line for line in lines if line.startswith("pa_beat_lock_held{")]
    assert len(held) == 1 and f":{beat.pid}:" in held[0] and held[0].endswith(" 1.0")
    runs = next(line for line in lines if line.startswith('pa_beat_entry_runs_total{entry="ping"}'))
    assert float(runs.split()[-1]) >= 2
    assert any(line.startswith('pa_beat_entries{state="enabled"}') for line in lines)
    assert any(
        line.startswith('pa_beat_entry_next_run_timestamp_seconds{entry="process-email-queue"}')
        for line in lines
    )
    assert os.path.exists(beat.log)
