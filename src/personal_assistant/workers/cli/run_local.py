"""``make run``: the whole job on one machine, shut down cleanly with Ctrl-C.

Migrates the domain store (DATABASE_URL, else DATA_DIR/assistant.db), then starts one worker
consuming all five queues (or WORKER_QUEUE) with an embedded beat (when SCHEDULER_ENABLED),
against CELERY_BROKER_URL. When no broker answers there and the URL points at
this machine, it starts a private ``redis-server`` (persistence on, data under DATA_DIR/redis)
and stops it on exit. Children run in their own sessions, so Ctrl-C reaches only this supervisor,
which then stops them in order: the worker first (warm shutdown), then Redis.

A worker whose main process dies (an unrecoverable error, the OOM killer) is started again,
after 1 s, then 2, 4, ... up to a minute while it keeps dying young; a worker that ran for
a minute starts again after 1 s. Each restart is logged with the exit status. A worker that
exits because its configuration is wrong (exit code 2 or 78) is not restarted: it would fail
the same way; nor is one that stopped cleanly (exit code 0, ``celery control shutdown``), nor
one refused because a running worker has its node name (exit code 73).

One run per data directory: the supervisor holds DATA_DIR/run.lock (data_dir_lock.py) from
start to exit, and its worker and Redis hold it with it. A second run there exits with 73
(Celery's code for "already running") and one line naming the holder; a lock whose holder was
killed is taken over, saying so. The private Redis is this run's: a run on another DATA_DIR
whose broker URL reaches it is refused too (it would lose its broker when this run stops). On
Linux the children are told to stop when the supervisor dies (SIGKILL included), so a killed
run leaves nothing running for long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from personal_assistant.workers.cli.data_dir_lock import (
    EX_CANTCREAT,
    DataDirLock,
    RunRefused,
    format_time,
    private_redis_owner,
)
from personal_assistant.workers.cli.private_redis import (
    LOCAL_HOSTS,
    PrivateRedis,
    broker_answers,
    follow_parent,
)
from personal_assistant.workers.config import (
    ConfigError,
    WorkerSettings,
    is_redis_url,
    load_settings,
    mask_url,
)
from personal_assistant.workers.store import migrate
from personal_assistant.workers.store.engine import dispose_all

__all__ = ["PrivateRedis", "Supervisor", "broker_answers", "describe_exit", "main"]

logger = logging.getLogger("personal_assistant.workers.run")

# Celery's warm shutdown waits for running tasks; past this, the supervisor stops waiting.
WORKER_STOP_TIMEOUT_S = 60.0
# Restart back-off: doubling from 1 s to a minute; a worker that lived a minute starts over.
RESTART_FIRST_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 60.0
RESTART_STABLE_AFTER_S = 60.0
# Exit codes that mean "your configuration is wrong" (usage error, sysexits EX_CONFIG).
CONFIG_EXIT_CODES = frozenset({2, 78})
# The worker's node name is held by a running worker (hooks/startup.py): a restart would be
# refused the same way until the operator stops that one or renames this one.
NAME_TAKEN_EXIT_CODE = EX_CANTCREAT


def worker_command(settings: WorkerSettings) -> list[str]:
    """The ``celery worker`` command line for this machine."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "personal_assistant.workers.celery_app",
        "worker",
        "-Q",
        ",".join(settings.worker_queue),
        "-c",
        str(settings.worker_concurrency),
        "--max-tasks-per-child",
        str(settings.worker_max_tasks_per_child),
        "-n",
        "local@%h",
        "-l",
        settings.log_level,
    ]
    if settings.scheduler_enabled:
        command.append("-B")  # the enhanced scheduler keeps its state in Redis, not a file
    return command


class Supervisor:
    """Runs the private broker (if needed) and the worker; stops both on a signal."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.redis: PrivateRedis | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.lock = DataDirLock(settings.data_dir, settings.celery_broker_url)

    def lock_data_dir(self) -> None:
        """Hold the data directory's lock (RunRefused when another run holds it)."""
        stale = self.lock.acquire()
        if stale is not None:
            logger.warning(
                "taking over %s from make run pid %d (since %s), which ended without releasing it",
                self.lock.path,
                stale.pid,
                format_time(stale.started_at),
            )

    def ensure_broker(self) -> None:
        """Use the configured broker, or start a private Redis where it should be."""
        url = self.settings.celery_broker_url
        if not is_redis_url(url):
            return  # RabbitMQ and others: the operator runs them.
        if broker_answers(url):
            owner = private_redis_owner(url, self.settings.data_dir)
            if owner is not None:
                owner_dir, holder = owner
                who = f" ({holder.describe(broker=False)})" if holder else ""
                raise RunRefused(
                    f"the broker at {mask_url(url)} is the private Redis of the make run in "
                    f"{owner_dir}{who}: it stops with that run; give this run a "
                    "CELERY_BROKER_URL on another port (it starts its own there) or a Redis "
                    "of your own"
                )
            logger.info("using the broker at %s", mask_url(url))
            return
        host = urlsplit(url).hostname or ""
        if host not in LOCAL_HOSTS:
            raise RuntimeError(
                f"no broker answers at {mask_url(url)}, and it is not on this "
                "machine, so none is started for it"
            )
        keep = (self.lock.fd,) if self.lock.fd is not None else ()
        self.redis = PrivateRedis(url, self.settings.data_dir, keep_fds=keep)
        self.redis.start()

    def migrate_store(self) -> None:
        """Bring the domain store to the newest schema (``celery ... db upgrade``)."""
        url = self.settings.store_url
        try:
            result = migrate.upgrade(url)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise RuntimeError(f"store {mask_url(url)}: {mask_url(reason)}") from None
        finally:
            dispose_all()
        if result.changed:
            logger.info("store %s migrated: %s -> %s", mask_url(url), result.before, result.after)

    def run(self) -> int:
        """Start everything, wait for the worker, stop everything; return the exit code.

        Raises RunRefused (before starting anything) when another run holds the data
        directory or its private Redis is the configured broker.
        """
        self.lock_data_dir()
        try:
            return self._run_locked()
        finally:
            self.lock.release()

    def _run_locked(self) -> int:
        for directory in (*self.settings.cleanup_temp_roots, *self.settings.cleanup_log_roots):
            directory.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self.ensure_broker()
            self.migrate_store()
            command = worker_command(self.settings)
            delay = RESTART_FIRST_DELAY_S
            while True:
                if self.stopping:
                    return 0  # Ctrl-C came while Redis or the store were being set up
                code, lived = self._run_worker(command)
                if self.stopping or code == 0:
                    return 0  # stopped on purpose (Ctrl-C here, or `celery control shutdown`)
                if code in CONFIG_EXIT_CODES:
                    logger.error("the worker exited with %d (configuration): not restarted", code)
                    return code
                if code == NAME_TAKEN_EXIT_CODE:
                    logger.error("the worker's node name is taken (exit %d): not restarted", code)
                    return code
                delay = RESTART_FIRST_DELAY_S if lived >= RESTART_STABLE_AFTER_S else delay
                logger.warning(
                    "the worker exited (%s) after %.0fs; restarting in %.0fs",
                    describe_exit(code),
                    lived,
                    delay,
                )
                if self._sleep(delay):
                    return 0
                delay = min(delay * 2, RESTART_MAX_DELAY_S)
        finally:
            self._stop_worker()
            if self.redis is not None:
                self.redis.stop()

    def _run_worker(self, command: list[str]) -> tuple[int, float]:
        """Run the worker until it exits; return its exit code and how long it lived."""
        logger.info("starting: %s", " ".join(command[1:]))
        started = time.monotonic()
        self.worker = subprocess.Popen(  # noqa: S603 - argv built here, no shell
            command,
            start_new_session=True,
            env=os.environ.copy(),
            # The worker uses the data directory: it holds the lock with this supervisor.
            pass_fds=(self.lock.fd,) if self.lock.fd is not None else (),
            preexec_fn=follow_parent(os.getpid()),  # noqa: PLW1509 - no thread runs here
        )
        if self.stopping:  # Ctrl-C came while it was being started: _on_signal missed it
            self.worker.terminate()
        while self.worker.poll() is None:
            time.sleep(0.2)
        # A main process that died leaves its pool children and its embedded beat behind (they
        # are in its session): stop them, or the next start would run a second beat.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.worker.pid, signal.SIGKILL)
        return int(self.worker.returncode or 0), time.monotonic() - started

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking early on Ctrl-C; True when stopping."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.stopping

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            logger.warning("second signal: stopping the worker now")
            if self.worker and self.worker.poll() is None:
                self.worker.kill()
            return
        self.stopping = True
        logger.info("shutting down (Ctrl-C again to force)")
        if self.worker and self.worker.poll() is None:
            self.worker.terminate()  # Celery's warm shutdown: finish running tasks.

    def _stop_worker(self) -> None:
        if not self.worker or self.worker.poll() is not None:
            return
        self.worker.terminate()
        try:
            self.worker.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()


def describe_exit(code: int) -> str:
    """How a child ended, in words: ``exit code 1`` or ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def main() -> int:
    """Entry point of ``make run``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s run: %(message)s")
    # Alembic's INFO lines (plugins, "Context impl SQLiteImpl") say nothing to an operator:
    # migrate_store logs what changed.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"personal_assistant.workers: {exc}\n")
        return 2
    try:
        return Supervisor(settings).run()
    except RunRefused as exc:
        sys.stderr.write(f"make run: {exc}\n")
        return exc.exit_code
    except RuntimeError as exc:
        sys.stderr.write(f"make run: {exc}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
