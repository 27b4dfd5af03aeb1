"""Real ``celery worker`` processes for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from tests.support.redis_server import free_port

APP = "personal_assistant.workers.celery_app"
REPO = Path(__file__).resolve().parents[2]


def worker_env(broker_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a worker or CLI process talking to the test broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "WORKER_"))}
    env.update(
        {
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": broker_url,
            "ENVIRONMENT": "test",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
            "PYTHONUNBUFFERED": "1",
            # The test tasks (tests.step, tests.noop, ...) may run in workflows.
            "WORKFLOW_ALLOWED_TASKS": "tests.*",
            # A port of its own (a test that scrapes sets its own): 9808 is one per machine,
            # and tests run side by side.
            "METRICS_PORT": str(free_port()),
            "BEAT_METRICS_PORT": str(free_port()),
        }
    )
    env.update(extra or {})
    return env


class WorkerProcess:
    """A ``celery worker`` subprocess consuming the given queues."""

    def __init__(
        self,
        broker_url: str,
        queues: Sequence[str],
        *,
        log_dir: Path,
        concurrency: int = 1,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        app: str = APP,
    ) -> None:
        self.name = f"test-{'-'.join(q.split('_')[0] for q in queues)}-{uuid.uuid4().hex[:6]}"
        self.hostname = f"{self.name}@localhost"
        self.log_path = log_dir / f"{self.name}.log"
        self.args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            # No queues: the worker picks its own (WORKER_QUEUE, or all of them).
            *(["-Q", ",".join(queues)] if queues else []),
            "-c",
            str(concurrency),
            "-n",
            self.hostname,
            "-l",
            "info",
            "--without-gossip",
            "--without-mingle",
            *extra_args,
        ]
        # Each test's workers share a DATA_DIR of their own (the SQLite store among others),
        # never the checkout's var/.
        self.env = worker_env(broker_url, {"DATA_DIR": str(log_dir / "var"), **(env or {})})
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self, wait_ready: float = 30.0) -> WorkerProcess:
        """Start the worker and wait until its log says it is ready."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + wait_ready
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {wait_ready}s:\n{self.log()}")

    def log(self) -> str:
        """Everything the worker has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill_hard(self) -> None:
        """SIGKILL the whole worker (main process and pool children): no shutdown code runs."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM) without waiting: stop several workers at once."""
        if self.process and self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it hangs."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_hard()
        self._close_log()
