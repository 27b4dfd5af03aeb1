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
the same way; nor is one that stopped cleanly (exit code 0, ``celery control shutdown``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit

import redis
from sqlalchemy.exc import SQLAlchemyError

from personal_assistant.workers import constants as c
from personal_assistant.workers import redis_clients
from personal_assistant.workers.config import (
    ConfigError,
    WorkerSettings,
    is_redis_url,
    load_settings,
    mask_url,
)
from personal_assistant.workers.store import migrate
from personal_assistant.workers.store.engine import dispose_all

logger = logging.getLogger("personal_assistant.workers.run")

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Celery's warm shutdown waits for running tasks; past this, the supervisor stops waiting.
WORKER_STOP_TIMEOUT_S = 60.0
REDIS_START_TIMEOUT_S = 15.0
# Restart back-off: doubling from 1 s to a minute; a worker that lived a minute starts over.
RESTART_FIRST_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 60.0
RESTART_STABLE_AFTER_S = 60.0
# Exit codes that mean "your configuration is wrong" (usage error, sysexits EX_CONFIG).
CONFIG_EXIT_CODES = frozenset({2, 78})


def broker_answers(url: str, timeout: float = c.REDIS_PROBE_TIMEOUT_S) -> bool:
    """True when a Redis server answers PING at ``url`` within ``timeout`` (one try)."""
    try:
        client = redis_clients.probe_client(url, timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


class PrivateRedis:
    """A redis-server owned by ``make run``: AOF persistence, noeviction, loopback only.

    Its settings, the password among them, are in DATA_DIR/redis/redis.conf (mode 0600, removed
    on stop), never on its command line, which every user of the machine can read (ps).
    """

    def __init__(self, url: str, data_dir: Path) -> None:
        parts = urlsplit(url)
        self.url = url
        self.port = parts.port or 6379
        # As redis-py reads them from the URL: percent-decoded.
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.data_dir = data_dir / "redis"
        self.config_file = self.data_dir / "redis.conf"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        """The server's redis.conf: today's settings plus the password (and the URL's user)."""
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1 -::1",
            f"dir {_conf_quote(str(self.data_dir.resolve()))}",
            "appendonly yes",
            "maxmemory-policy noeviction",
            "logfile redis.log",  # relative to dir, which is set above
        ]
        if self.password:
            lines.append(f"requirepass {_conf_quote(self.password)}")
            if self.username and self.username != "default":
                # redis-py sends AUTH user password: give the URL's user the same rights.
                rule = _conf_quote(">" + self.password)
                lines.append(f"user {_conf_quote(self.username)} on {rule} ~* &* +@all")
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        """Write redis.conf readable by this user only (a file left from a crash is replaced,
        and a link planted in its place is not followed)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.unlink(missing_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(self.config_file, flags, 0o600), "wb") as out:
            out.write(self.config().encode())
        return self.config_file

    def start(self) -> None:
        """Start the server and wait for it to answer; raise RuntimeError if it does not."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "no broker answers and redis-server is not installed "
                "(`apt-get install redis-server`, or set CELERY_BROKER_URL)"
            )
        config_file = self.write_config()
        self.process = subprocess.Popen(  # noqa: S603 - our argv
            [binary, str(config_file.resolve())], start_new_session=True
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if broker_answers(self.url, timeout=0.2):
                logger.info(
                    "started a private Redis on port %d (data in %s)", self.port, self.data_dir
                )
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """Stop the server; it writes its AOF on SIGTERM."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            logger.info("stopped the private Redis")
        self.config_file.unlink(missing_ok=True)


def _conf_quote(value: str) -> str:
    """``value`` as one argument of redis.conf: double-quoted, with '"', '\\' and control
    characters escaped (redis splits config lines as its own shell-like parser does)."""
    escaped = []
    for char in value:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


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

    def ensure_broker(self) -> None:
        """Use the configured broker, or start a private Redis where it should be."""
        url = self.settings.celery_broker_url
        if not is_redis_url(url):
            return  # RabbitMQ and others: the operator runs them.
        if broker_answers(url):
            logger.info("using the broker at %s", mask_url(url))
            return
        host = urlsplit(url).hostname or ""
        if host not in LOCAL_HOSTS:
            raise RuntimeError(
                f"no broker answers at {mask_url(url)}, and it is not on this "
                "machine, so none is started for it"
            )
        self.redis = PrivateRedis(url, self.settings.data_dir)
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
        """Start everything, wait for the worker, stop everything; return the exit code."""
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
                code, lived = self._run_worker(command)
                if self.stopping or code == 0:
                    return 0  # stopped on purpose (Ctrl-C here, or `celery control shutdown`)
                if code in CONFIG_EXIT_CODES:
                    logger.error("the worker exited with %d (configuration): not restarted", code)
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
            command, start_new_session=True, env=os.environ.copy()
        )
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
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"personal_assistant.workers: {exc}\n")
        return 2
    try:
        return Supervisor(settings).run()
    except RuntimeError as exc:
        sys.stderr.write(f"make run: {exc}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
