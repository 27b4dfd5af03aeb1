"""A private PostgreSQL cluster on a free loopback port, for tests of the store's PostgreSQL paths.

The cluster is made with the installed server binaries (``initdb``, ``pg_ctl``, ``postgres``
from PATH, else the newest under /usr/lib/postgresql/*/bin; ``make system-deps`` installs them),
trusts every connection (it listens on 127.0.0.1 only and lives as long as the test session)
and runs without fsync: what a crash would lose is thrown away anyway.

Root: initdb, pg_ctl and postgres refuse to run as root (a server run as root would hand the
operating system to anyone who can run SQL), and CI runs the tests as root. There they run as
the ``postgres`` system user, which Debian's package creates. That user cannot enter pytest's
temporary directories (mode 0700, owned by root), so the data directory and the unix socket go
to a fresh directory under the system's temp directory owned by that user, removed by
:meth:`PostgresServer.stop`; the server's log stays in ``workdir`` either way (written through
a file descriptor opened here, so its owner does not matter).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.redis_server import free_port

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
# Where Debian and Ubuntu install the server binaries (not on PATH: only the client wrappers are).
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
# The account initdb and the server run as when the tests run as root (see the module doc).
UNPRIVILEGED_USER = "postgres"
# The cluster's superuser, which the tests connect as.
SUPERUSER = "postgres"
# Durability traded for speed: nothing in a test cluster outlives the session.
SPEED_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
# pg_ctl start takes about 0.2 s here; a loaded CI machine gets ample room before we give up.
START_TIMEOUT_S = 30
# A fast shutdown takes about 0.1 s; after this the server is killed instead.
STOP_TIMEOUT_S = 10
# How long a killed server gets to disappear before stop() gives up on it.
KILL_WAIT_S = 5.0
# The free port we probe can be taken by another process before the server binds it.
PORT_ATTEMPTS = 3
# An unquoted PostgreSQL identifier (at most 63 bytes), so a name never needs escaping in a URL.
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# DROP DATABASE ... WITH (FORCE) exists from PostgreSQL 13 on.
FORCE_DROP_VERSION = 130000


class PostgresNotInstalled(RuntimeError):
    """The PostgreSQL server binaries are not installed on this machine."""


@dataclass(frozen=True)
class ServerBinaries:
    """The directory that holds initdb, pg_ctl and postgres (pg_ctl finds postgres beside it)."""

    bin_dir: Path

    @property
    def initdb(self) -> str:
        """Path of initdb."""
        return str(self.bin_dir / "initdb")

    @property
    def pg_ctl(self) -> str:
        """Path of pg_ctl."""
        return str(self.bin_dir / "pg_ctl")


def _has_all(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in SERVER_BINARIES)


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin; "9.6" < "15" numerically, not as text.
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def find_server_binaries(debian_bin_dirs: str = DEBIAN_BIN_DIRS) -> ServerBinaries:
    """The server binaries on PATH, else the newest version under ``debian_bin_dirs``."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        # Resolved: PATH may hold symlinks to the versioned directory (pg_ctl does the same).
        bin_dir = Path(on_path).resolve().parent
        if _has_all(bin_dir):
            return ServerBinaries(bin_dir)
    candidates = [Path(found) for found in glob(debian_bin_dirs)]
    installed = sorted((d for d in candidates if _has_all(d)), key=_version_key)
    if not installed:
        raise PostgresNotInstalled(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH nor under "
            f"{debian_bin_dirs}; run `make system-deps` (it installs Debian's postgresql package)"
        )
    return ServerBinaries(installed[-1])


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account to run the server binaries as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise RuntimeError(
            f"the tests run as root, PostgreSQL refuses to, and there is no {UNPRIVILEGED_USER!r} "
            "user to run it as; run `make system-deps` (Debian's postgresql package creates it)"
        ) from None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper that never comes counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class PostgresServer:
    """A PostgreSQL cluster owned by the test session (loopback only, trust authentication)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.pid: int | None = None
        self.log_path = workdir / "postgres.log"
        self._home: Path | None = None
        self._private_home = False
        self._account: pwd.struct_passwd | None = None
        self._binaries: ServerBinaries | None = None
        self._owner_pid = os.getpid()

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (the cluster's maintenance database)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this cluster, as the superuser."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        if self._home is None:
            raise RuntimeError("the PostgreSQL server was not started")
        return self._home / "data"

    def start(self) -> PostgresServer:
        """Make the cluster, start it on a free port and wait until it accepts connections."""
        self._binaries = find_server_binaries()
        self._account = _unprivileged_account()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._account is None:
            self._home = self.workdir
        else:
            self._home = Path(tempfile.mkdtemp(prefix="pa-test-postgres-"))
            self._private_home = True
            os.chown(self._home, self._account.pw_uid, self._account.pw_gid)
        self._initdb()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = free_port()
            if self._pg_ctl_start():
                break
            if attempt == PORT_ATTEMPTS or "could not bind" not in self._log_tail():
                self._kill_leftover()
                self._remove_home()
                raise RuntimeError(f"PostgreSQL did not start:\n{self._log_tail()}")
        self.pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        atexit.register(self._stop_at_exit)
        self._wait_until_accepting()
        return self

    def stop(self) -> None:
        """Stop the server (a fast shutdown; killed if that fails) and remove a private home."""
        if self.pid is not None:
            atexit.unregister(self._stop_at_exit)
            data = str(self.data_dir)
            timeout = str(STOP_TIMEOUT_S)
            command = [self._pg_ctl, "stop", "-D", data, "-m", "fast", "-w", "-t", timeout]
            try:
                stopped = self._run(command).returncode == 0
            except OSError:  # pg_ctl gone (uninstalled mid-session): kill the server instead
                stopped = False
            if not stopped or _alive(self.pid):
                self._kill(self.pid)
            self.pid = None
        self._remove_home()

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (copied from template1); its URL."""
        with self._connect() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(self._identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, closing whatever connections it still has."""
        identifier = self._identifier(name)
        with self._connect() as connection:
            if connection.info.server_version >= FORCE_DROP_VERSION:
                connection.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier)
                )
                return
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(identifier))

    # -- internals -------------------------------------------------------------------------

    @property
    def _pg_ctl(self) -> str:
        if self._binaries is None:
            raise RuntimeError("the PostgreSQL server was not started")
        return self._binaries.pg_ctl

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        """Run a server binary (as the unprivileged account when we are root), output to the log."""
        account = self._account
        with self.log_path.open("ab") as log:
            return subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._home,  # the unprivileged account may not enter our working directory
                check=False,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,  # not root's groups either
            )

    def _initdb(self) -> None:
        if self._binaries is None:  # pragma: no cover - start() sets it first
            raise RuntimeError("the PostgreSQL server was not started")
        result = self._run(
            [
                self._binaries.initdb,
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                # C: no locale data to load, and the same sort order on every machine.
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        if result.returncode != 0:
            self._remove_home()
            raise RuntimeError(f"initdb failed:\n{self._log_tail()}")

    def _pg_ctl_start(self) -> bool:
        settings = [
            f"port={self.port}",
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self._home}",
            *SPEED_SETTINGS,
        ]
        # pg_ctl hands -o to a shell: each setting is quoted.
        options = " ".join(f"-c {shlex.quote(setting)}" for setting in settings)
        data, timeout = str(self.data_dir), str(START_TIMEOUT_S)
        result = self._run([self._pg_ctl, "start", "-D", data, "-w", "-t", timeout, "-o", options])
        return result.returncode == 0

    def _wait_until_accepting(self) -> None:
        # pg_ctl -w already waited for "ready"; this proves TCP on the port works too.
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with self._connect() as connection:
                    connection.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections on port {self.port}"
                    ) from None
                time.sleep(0.05)

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,  # CREATE/DROP DATABASE cannot run inside a transaction
            connect_timeout=5,
        )

    @staticmethod
    def _identifier(name: str) -> sql.Identifier:
        if not DATABASE_NAME.fullmatch(name):
            raise ValueError(f"bad database name {name!r}: lower-case letters, digits and _")
        return sql.Identifier(name)

    @staticmethod
    def _kill(pid: int) -> None:
        """SIGQUIT (an immediate shutdown that also ends the backends), then SIGKILL."""
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + KILL_WAIT_S
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _alive(pid):
                return

    def _kill_leftover(self) -> None:
        """Kill a server that pg_ctl gave up waiting for (its pid file names it)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            self._kill(int((self.data_dir / "postmaster.pid").read_text().split()[0]))

    def _remove_home(self) -> None:
        if self._private_home and self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
            self._private_home = False

    def _log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"

    def _stop_at_exit(self) -> None:
        # A session that ends without its fixture's teardown must not leave a server behind;
        # a forked child of the test process must not stop its parent's server.
        if os.getpid() == self._owner_pid:
            self.stop()
