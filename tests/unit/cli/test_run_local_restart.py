"""``make run`` restarts a worker that dies, backing off, and not one that stopped on purpose."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from personal_assistant.workers.cli import run_local
from personal_assistant.workers.cli.run_local import Supervisor, describe_exit
from personal_assistant.workers.config import WorkerSettings, load_settings

FIRST_DELAY = 0.05
MAX_DELAY = 0.2

# Makes a supervisor whose "worker" is ``python -c`` exiting with the given code.
MakeSupervisor = Callable[[int], Supervisor]


@pytest.fixture
def starts(tmp_path: Path) -> Path:
    """The file each start of the stand-in worker appends one line to."""
    return tmp_path / "starts"


def start_count(starts: Path) -> int:
    return len(starts.read_text().splitlines()) if starts.exists() else 0


@pytest.fixture
def make_supervisor(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, starts: Path
) -> Iterator[MakeSupervisor]:
    """Supervisors with a tiny stand-in worker, short delays and no broker to start.

    ``run`` installs SIGINT and SIGTERM handlers; the test's own are put back afterwards.
    """
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    clean_env.setattr(run_local, "RESTART_FIRST_DELAY_S", FIRST_DELAY)
    clean_env.setattr(run_local, "RESTART_MAX_DELAY_S", MAX_DELAY)
    clean_env.setattr(Supervisor, "ensure_broker", lambda self: None)

    def make(exit_code: int) -> Supervisor:
        code = f"import sys; open({str(starts)!r}, 'a').write('start\\n'); sys.exit({exit_code})"

        def command(settings: WorkerSettings) -> list[str]:
            return [sys.executable, "-c", code]

        clean_env.setattr(run_local, "worker_command", command)
        settings = load_settings(celery_broker_url="memory://", data_dir=tmp_path / "data")
        return Supervisor(settings)

    yield make
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def stop_after(supervisor: Supervisor, sleeps: int) -> list[float]:
    """Replace the supervisor's back-off wait: record each delay, stop at the ``sleeps``-th."""
    delays: list[float] = []

    def record(seconds: float) -> bool:
        delays.append(seconds)
        return len(delays) >= sleeps

    supervisor._sleep = record  # type: ignore[method-assign]
    return delays


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
        (1, "exit code 1"),
        (0, "exit code 0"),
    ],
)
def test_an_exit_status_is_described_in_words(code: int, words: str) -> None:
    assert describe_exit(code) == words


def test_a_dying_worker_is_restarted_with_doubling_delays_up_to_the_cap(
    make_supervisor: MakeSupervisor, starts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = make_supervisor(3)
    delays = stop_after(supervisor, sleeps=4)

    with caplog.at_level(logging.WARNING, logger=run_local.logger.name):
        code = supervisor.run()

    assert code == 0  # stopped while waiting to restart
    assert start_count(starts) == 4
    assert delays == [FIRST_DELAY, 2 * FIRST_DELAY, MAX_DELAY, MAX_DELAY]
    restarts = [r.getMessage() for r in caplog.records if "restarting in" in r.getMessage()]
    assert len(restarts) == 4
    assert all("exited (exit code 3)" in message for message in restarts)


def test_a_worker_that_lived_long_enough_is_restarted_after_the_first_delay_again(
    make_supervisor: MakeSupervisor, starts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_local, "RESTART_STABLE_AFTER_S", 0.0)  # every run counts as stable
    supervisor = make_supervisor(1)
    delays = stop_after(supervisor, sleeps=3)

    assert supervisor.run() == 0
    assert start_count(starts) == 3
    assert delays == [FIRST_DELAY] * 3


@pytest.mark.parametrize("code", [2, 78])
def test_a_worker_that_exits_for_its_configuration_is_not_restarted(
    make_supervisor: MakeSupervisor, starts: Path, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = make_supervisor(code)
    delays = stop_after(supervisor, sleeps=1)

    with caplog.at_level(logging.ERROR, logger=run_local.logger.name):
        returned = supervisor.run()

    assert returned == code
    assert start_count(starts) == 1
    assert delays == []
    assert f"exited with {code} (configuration): not restarted" in caplog.text


def test_a_worker_that_stops_cleanly_ends_the_loop_with_success(
    make_supervisor: MakeSupervisor, starts: Path
) -> None:
    supervisor = make_supervisor(0)
    delays = stop_after(supervisor, sleeps=1)

    assert supervisor.run() == 0
    assert start_count(starts) == 1
    assert delays == []


def test_a_supervisor_told_to_stop_is_not_kept_waiting_by_the_back_off(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor(3)
    supervisor.stopping = True
    started = time.monotonic()

    assert supervisor._sleep(30.0) is True
    assert time.monotonic() - started < 1.0


def test_a_worker_dying_after_a_stop_request_is_not_restarted(
    make_supervisor: MakeSupervisor, starts: Path
) -> None:
    supervisor = make_supervisor(3)
    delays = stop_after(supervisor, sleeps=1)
    supervisor.stopping = True  # Ctrl-C arrived while the worker ran

    assert supervisor.run() == 0
    assert start_count(starts) == 1
    assert delays == []
