"""A private redis-server on a free loopback port, for tests that need the real thing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The redis-server binary on PATH (``make test`` installs it when missing)."""
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is not on PATH; run `make test` (it installs it)")
    return found


class RedisServer:
    """A redis-server process owned by the test session (loopback only).

    No persistence by default; ``appendfsync`` turns the AOF on with that fsync policy
    (``always`` or ``everysec``), for tests that restart the server under load.
    """

    def __init__(
        self, workdir: Path, *, appendfsync: str | None = None, password: str | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.appendfsync = appendfsync
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """URL of database 0 (with the password, when the server requires one)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendfsync else "no",
                "--appendfsync",
                self.appendfsync or "everysec",
                "--dir",
                str(self.workdir),
                "--maxmemory-policy",
                "noeviction",
                "--loglevel",
                "warning",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL the server (what the AOF's fsync policy has not written is lost)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM: it writes its AOF and exits)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
