"""What failed, and whether retrying can help: the error taxonomy every task's retry decision uses.

A task raises ``TransientError`` for what may pass on its own and ``PermanentError`` for what
retrying cannot fix; other exceptions are classified by type in ``is_transient``. Clients of
other libraries add their own transient types through ``also`` (redis_clients.py names
redis-py's), so this module stays free of any client library.
"""

from __future__ import annotations

import socket


class TransientError(Exception):
    """A failure that may pass on its own (a timeout, a 503, a lost connection): retried."""


class PermanentError(Exception):
    """A failure retrying cannot fix (bad input, a 4xx, a missing object): dead-lettered at once."""


# Errors retried with backoff unless a task says otherwise. OSError covers socket errors and
# refused connections; its subclasses that describe the input (missing file, permission) are
# excluded in is_transient because retrying them only delays the dead letter.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
    OSError,
)
PERMANENT_OS_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_transient(exc: BaseException, also: tuple[type[BaseException], ...] = ()) -> bool:
    """True when ``exc`` is worth retrying: a transient type here or in ``also``."""
    if isinstance(exc, (PermanentError, *PERMANENT_OS_ERRORS)):
        return False
    return isinstance(exc, (*TRANSIENT_ERRORS, *also))
