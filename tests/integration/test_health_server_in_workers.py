"""A real worker's health server: on loopback by default, and not held by its pool children."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from personal_assistant.workers import constants as c
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

LISTEN = "0A"  # the state column of /proc/net/tcp


def listening_sockets(port: int) -> dict[str, int]:
    """{local address (hex, as /proc/net/tcp writes it): socket inode} listening on ``port``."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == LISTEN:
                found[address] = int(fields[9])
    return found


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the worker's pool children)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The name, in parentheses, may hold spaces: the parent pid is the 2nd field after it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry))
    return children


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds a descriptor of."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def test_the_worker_serves_health_on_loopback_and_its_pool_children_hold_no_copy_of_the_socket(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    worker = start_worker([c.AI_QUEUE], concurrency=2, env={"METRICS_PORT": str(port)})
    assert worker.process is not None
    main = worker.process.pid

    listening = wait_for(lambda: listening_sockets(port), timeout=10)
    assert list(listening) == ["0100007F"]  # 127.0.0.1 only, with no METRICS_HOST set
    inode = listening["0100007F"]
    assert inode in socket_inodes(main)

    def both_pool_children() -> list[int]:
        found = children_of(main)
        return found if len(found) >= 2 else []

    pool = wait_for(both_pool_children, timeout=15)
    for child in pool:
        assert inode not in socket_inodes(child), f"pool child {child} holds the health socket"
