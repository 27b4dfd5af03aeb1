"""``make run``'s private Redis, and how its children follow it.

:class:`PrivateRedis` is the ``redis-server`` ``make run`` starts when no broker answers at a
CELERY_BROKER_URL on this machine: AOF persistence, ``noeviction``, loopback only, data under
DATA_DIR/redis. :func:`follow_parent` makes a child (that Redis, the worker) stop when the
supervisor dies, however it died.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import redis_clients
from personal_assistant.workers.cli.data_dir_lock import REDIS_CONFIG, REDIS_DIR

logger = logging.getLogger("personal_assistant.workers.run")

LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
# A fresh redis-server answers in well under a second; one loading a large AOF takes longer.
REDIS_START_TIMEOUT_S: Final = 15.0
# prctl(2) option: the signal a child gets when its parent dies (Linux).
_PR_SET_PDEATHSIG: Final = 1


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

    def __init__(self, url: str, data_dir: Path, keep_fds: tuple[int, ...] = ()) -> None:
        parts = urlsplit(url)
        self.url = url
        self.port = parts.port or 6379
        # As redis-py reads them from the URL: percent-decoded.
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.data_dir = data_dir / REDIS_DIR
        # data_dir_lock.private_redis_owner finds the run owning a Redis by this path.
        self.config_file = self.data_dir / REDIS_CONFIG
        #: Descriptors the server inherits: the data directory's lock (it uses the directory).
        self.keep_fds = keep_fds
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
            [binary, str(config_file.resolve())],
            start_new_session=True,
            pass_fds=self.keep_fds,
            preexec_fn=follow_parent(os.getpid()),  # noqa: PLW1509 - no thread runs here
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


def follow_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` making the child get SIGTERM when ``parent`` dies (Linux; elsewhere a
    no-op): Redis saves and exits, the worker shuts down warm, instead of running on, orphaned,
    with nobody to stop them."""

    def arm() -> None:
        if not sys.platform.startswith("linux"):
            return
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # died between fork and prctl: no signal will come
            os.kill(os.getpid(), signal.SIGTERM)

    return arm
