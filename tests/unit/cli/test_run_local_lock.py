"""The ``make run`` supervisor holds its data directory for its whole run and hands the lock to
its worker; Ctrl-C during start-up starts no worker; a refusal is one line with exit code 73."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from personal_assistant.workers.cli import run_local
from personal_assistant.workers.cli.data_dir_lock import DataDirLock, is_locked
from personal_assistant.workers.cli.run_local import Supervisor
from personal_assistant.workers.config import WorkerSettings, load_settings


@pytest.fixture
def supervisor(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Supervisor]:
    """A supervisor on tmp_path/data whose "worker" reports whether the data dir is locked
    from inside it (into tmp_path/seen), and no broker to start."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    clean_env.setattr(Supervisor, "ensure_broker", lambda self: None)
    seen = tmp_path / "seen"
    code = (
        "import sys; from pathlib import Path; "
        "from personal_assistant.workers.cli.data_dir_lock import is_locked; "
        f"Path({str(seen)!r}).write_text(str(is_locked(Path(sys.argv[1]))))"
    )

    def command(settings: WorkerSettings) -> list[str]:
        return [sys.executable, "-c", code, str(settings.data_dir / "run.lock")]

    clean_env.setattr(run_local, "worker_command", command)
    yield Supervisor(load_settings(celery_broker_url="memory://", data_dir=tmp_path / "data"))
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def test_the_data_dir_is_locked_while_the_worker_runs_and_free_after(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    assert supervisor.run() == 0  # the stand-in worker exits 0: a clean stop

    assert (tmp_path / "seen").read_text() == "True"
    assert not is_locked(tmp_path / "data" / "run.lock")
    assert (tmp_path / "data" / "run.lock").read_text() == ""  # nothing for the next to take over


def test_ctrl_c_while_starting_up_starts_no_worker(supervisor: Supervisor, tmp_path: Path) -> None:
    supervisor.stopping = True  # Ctrl-C came while Redis or the store were being set up

    assert supervisor.run() == 0
    assert not (tmp_path / "seen").exists()


def test_a_run_beside_another_exits_73_with_one_line(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("DATA_DIR", str(tmp_path / "data"))
    clean_env.setenv("CELERY_BROKER_URL", "redis://:pw@127.0.0.1:1/0")
    holder = DataDirLock(tmp_path / "data", "redis://127.0.0.1:2/0")
    holder.acquire()  # this process holds it; main() opens the file anew, so it conflicts
    try:
        assert run_local.main() == 73
    finally:
        holder.release()

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"make run: {tmp_path / 'data'} is in use by another make run")
