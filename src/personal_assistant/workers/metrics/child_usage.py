"""CPU and memory of the pool's children, read by the worker's main process from ``/proc``.

The parent reads a child's ``/proc/<pid>/stat`` rather than asking the child: the child may be
killed at any moment (SIGKILL, time limits, recycling), and what it would have sent is lost with
it, while the parent's open file answers until the child is reaped.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _parse_stat(raw: bytes) -> tuple[float, int]:
    fields = raw[raw.rfind(b")") + 2 :].split()  # the command name may contain spaces
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime
    return cpu, int(fields[21]) * _PAGE_SIZE


class ChildUsage:
    """CPU used and memory of the pool's children, read from ``/proc/<pid>/stat``.

    Each child's stat file stays open: reading an open procfs file again from offset 0
    regenerates it, at a quarter of the cost of open, read and close. Inside a busy worker a
    read costs ten times more (the child runs on the other core), so the recorder reads each
    child once per batch of tasks, not once per task (recorder.py).

    An open file belongs to its process: once that process is gone, reading it fails (ESRCH)
    even if a new child got the same pid, so a recycled pid is never mistaken for the old
    child. Children recycled by ``--max-tasks-per-child`` leave entries behind: past ``size``
    the oldest are closed. 64 covers the concurrency of any one worker here (2 to 16), so live
    children stay open and at most 64 file descriptors are held for children already gone.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._files: OrderedDict[int, int] = OrderedDict()  # pid -> open stat file
        self._cpu_at_last_end: dict[int, float] = {}
        # The main thread begins; a scrape thread may read the tasks' usage (recorder.settle).
        self._lock = threading.Lock()

    def knows(self, pid: int) -> bool:
        """Whether ``pid`` has been seen (and not forgotten) since its first task."""
        return pid in self._cpu_at_last_end

    def begin(self, pid: int) -> None:
        """A task starts in ``pid``: the first time, note the CPU it used before (start-up)."""
        if pid in self._cpu_at_last_end:
            return  # the common case: no lock, no read
        with self._lock:
            if pid not in self._cpu_at_last_end:
                usage = self._read(pid)
                self._cpu_at_last_end[pid] = usage[0] if usage else 0.0

    def end(self, pid: int) -> tuple[float, int] | None:
        """(CPU seconds ``pid`` used since its previous ``end``, resident bytes now); None if
        it is gone."""
        with self._lock:
            usage = self._read(pid)
            if usage is None:
                self._forget(pid)
                return None
            cpu, rss = usage
            used = max(cpu - self._cpu_at_last_end.get(pid, cpu), 0.0)
            self._cpu_at_last_end[pid] = cpu
            return used, rss

    def forget(self, pid: int) -> None:
        """Close what is kept for ``pid`` (its process is gone)."""
        with self._lock:
            self._forget(pid)

    def close(self) -> None:
        """Close every kept file."""
        with self._lock:
            for pid in list(self._files):
                self._forget(pid)

    def _forget(self, pid: int) -> None:
        fd = self._files.pop(pid, None)
        if fd is not None:
            os.close(fd)
        self._cpu_at_last_end.pop(pid, None)

    def _read(self, pid: int) -> tuple[float, int] | None:
        fd = self._files.get(pid)
        if fd is None:
            try:
                fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            self._files[pid] = fd
            while len(self._files) > self.size:
                self._forget(next(iter(self._files)))
        try:
            return _parse_stat(os.pread(fd, 1024, 0))
        except OSError:
            return None
