"""The worker's request class: a task cancelled on a lost connection is put back, not dropped.

When the broker connection drops, Celery terminates the running ``acks_late`` tasks
(``worker_cancel_long_running_tasks_on_connection_loss``) and leaves their messages
unacknowledged, so that they run again. Celery's ``cancel`` first writes a RETRY state to the
result backend, and only then marks the request cancelled. On Redis the backend is the broker
that just went away: that write blocks the worker's main process for as long as the backend
retries (seconds) and then fails, the request is never marked cancelled, and the child's
termination is taken for a revoke, which *acknowledges* the message. The task is then neither
finished nor ever run again (measured: the running tasks of every Redis restart, lost).

This class marks the request cancelled first and skips the backend write (the broker is
unreachable; the task's redelivery will write its state). The message stays in the transport's
custody and is put back when the worker reconnects (broker/transport.py).
"""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request

REQUEST_PATH = f"{__name__}:DeliveryRequest"


class DeliveryRequest(Request):  # type: ignore[misc]
    """Celery's request, cancelled without touching the result backend."""

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        """Terminate the task for redelivery (the connection was lost); never acknowledge."""
        self._already_cancelled = True
        super().cancel(pool, signal, emit_retry=False)
