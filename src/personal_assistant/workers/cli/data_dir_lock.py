"""One ``make run`` per data directory: an OS lock on DATA_DIR/run.lock, and who holds it.

The lock is ``flock`` on a file that stays in place: the kernel drops it when the last process
holding the open file goes away, however it ended (SIGKILL, the OOM killer, a crash), so no run
can leave a lock behind that blocks the next. The holder writes its pid, start time, host and
broker URL (password masked) into the file for the message a second run prints; a clean stop
empties it, so content found by a run that got the lock means its predecessor ended without
releasing it (a stale lock, taken over and said so).

The supervisor hands the locked file to the processes it starts (its worker, its private
Redis): the data directory stays locked until the last process that uses it is gone, also when
the supervisor itself was killed and they are still stopping.

A private Redis belongs to the run that started it: :func:`private_redis_owner` tells, from the
config file a Redis says it was started with (``INFO server``), whether it is another live run's,
so a run on another DATA_DIR with the same broker URL does not adopt it (and lose it when that
run stops).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis

from personal_assistant.workers import redis_clients
from personal_assistant.workers.config import mask_url

LOCK_FILE: Final = "run.lock"
# Where PrivateRedis (run_local.py) keeps its data and config file, under DATA_DIR.
REDIS_DIR: Final = "redis"
REDIS_CONFIG: Final = "redis.conf"
# Celery's exit code when its pidfile says another instance already runs (celery.platforms
# EX_CANTCREAT): scripts and restart policies can tell "already running" from a failure.
EX_CANTCREAT: Final = 73
# Holder details are a few hundred bytes; anything longer is not a file this module wrote.
_MAX_HOLDER_BYTES: Final = 4096


class RunRefused(RuntimeError):
    """This run cannot start beside another one: one line, exit :data:`EX_CANTCREAT`."""

    exit_code = EX_CANTCREAT


@dataclass(frozen=True)
class Holder:
    """The run that holds (or held) a data directory's lock, as it wrote itself down."""

    pid: int
    started_at: float
    host: str
    broker: str  # password masked

    def to_json(self) -> str:
        """The lock file's content."""
        fields = {"pid": self.pid, "started_at": self.started_at, "host": self.host}
        return json.dumps({**fields, "broker": self.broker}) + "\n"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder in a lock file's content; None when empty or not ours."""
        try:
            data = json.loads(text)
            return cls(
                pid=int(data["pid"]),
                started_at=float(data["started_at"]),
                host=str(data["host"]),
                broker=str(data["broker"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def running(self) -> bool:
        """The holder's process still exists (on this host)."""
        if self.host != socket.gethostname():
            return True  # a data directory shared over the network: cannot tell, assume so
        return _pid_exists(self.pid)

    def describe(self, *, broker: bool = True) -> str:
        """``pid 4242 on host, since 2026-12-02 08:40:12 UTC, broker redis://...``."""
        where = f"pid {self.pid} on {self.host}, since {format_time(self.started_at)}"
        return f"{where}, broker {self.broker}" if broker else where


def format_time(ts: float) -> str:
    """A Unix time as the operator's local time with its zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def read_holder(path: Path) -> Holder | None:
    """Who wrote ``path`` (a lock file), None when nobody did or it cannot be read."""
    try:
        with path.open("rb") as file:
            return Holder.parse(file.read(_MAX_HOLDER_BYTES).decode(errors="replace"))
    except OSError:
        return None


def is_locked(path: Path) -> bool:
    """Some process holds ``path``'s lock (never this one's own lock: flock conflicts between
    two opens of a file even in one process)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class DataDirLock:
    """The exclusive lock of one data directory for one ``make run``."""

    def __init__(self, data_dir: Path, broker_url: str) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self.broker_url = broker_url
        self.fd: int | None = None

    def acquire(self) -> Holder | None:
        """Take the lock and write this run into it; return the stale holder taken over (a
        run that ended without releasing), None when the lock was free and clean.

        Raises RunRefused naming the holder when another run holds it.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: the content is the holder's until the lock is ours. O_NOFOLLOW: a link
        # planted in its place is not followed.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunRefused(self._busy_message()) from None
        except BaseException:
            os.close(fd)
            raise
        stale = Holder.parse(os.pread(fd, _MAX_HOLDER_BYTES, 0).decode(errors="replace"))
        mine = Holder(
            pid=os.getpid(),
            started_at=time.time(),
            host=socket.gethostname(),
            broker=mask_url(self.broker_url),
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, mine.to_json().encode(), 0)
        self.fd = fd
        return stale

    def release(self) -> None:
        """Empty the file and close it: the lock goes with the last process holding it (the
        file stays: removing it would let two runs lock two different files)."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def _busy_message(self) -> str:
        where = str(self.data_dir)
        holder = read_holder(self.path)
        if holder is None:
            return f"{where} is in use by another make run that is starting ({self.path})"
        if holder.running():
            return (
                f"{where} is in use by another make run ({holder.describe()}); stop it first "
                f"(Ctrl-C in its terminal, or kill {holder.pid}), or give this run another "
                "DATA_DIR"
            )
        left = holding_processes(self.path)
        who = f": pid {', '.join(map(str, left))}" if left else ""
        return (
            f"{where} is in use: make run {holder.describe()} has exited, but processes it "
            f"started still hold {self.path}{who}; they are stopping (wait, or kill them)"
        )


def holding_processes(path: Path) -> list[int]:
    """Pids of the processes of this user that have ``path`` open (Linux's /proc; empty
    elsewhere)."""
    target = os.path.realpath(path)
    found = []
    with contextlib.suppress(OSError), os.scandir("/proc") as processes:
        for process in processes:
            if process.name.isdigit() and _has_open(f"/proc/{process.name}/fd", target):
                found.append(int(process.name))
    return sorted(found)


def _has_open(fd_dir: str, target: str) -> bool:
    """A process's descriptor directory holds ``target`` (False when it cannot be read)."""
    with contextlib.suppress(OSError), os.scandir(fd_dir) as descriptors:
        for fd in descriptors:
            with contextlib.suppress(OSError):  # closed meanwhile
                if os.readlink(fd.path) == target:
                    return True
    return False


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, another user's
    return True


def private_redis_owner(url: str, data_dir: Path) -> tuple[Path, Holder | None] | None:
    """The data directory and holder of the live ``make run`` whose private Redis answers at
    ``url``, when that run is not this one (``data_dir``); None for any other Redis, or when
    it cannot tell (INFO refused or failing: the broker checks at start report on it)."""
    client = redis_clients.probe_client(url)
    try:
        info = client.info("server")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    config = Path(str(info.get("config_file") or ""))
    if config.name != REDIS_CONFIG or config.parent.name != REDIS_DIR:
        return None
    owner_dir = config.parent.parent
    if owner_dir.resolve() == data_dir.resolve():
        return None  # this data directory's own: nobody else holds its lock (this run does)
    lock = owner_dir / LOCK_FILE
    if not is_locked(lock):
        return None  # its run is gone: a Redis left running is any other Redis
    return owner_dir, read_holder(lock)
