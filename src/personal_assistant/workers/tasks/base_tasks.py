"""The base task every domain task uses: retry policy, dead letters, progress, ETA guard.

- Transient errors (``errors.is_transient``) are retried through Celery's own
  ``Task.retry`` with exponential backoff and "equal jitter": the n-th delay is drawn from
  ``[d/2, d]`` with ``d = base * 2**n`` (capped), so delays never shrink from one retry to the
  next, yet workers that failed together do not retry in lockstep.
- Anything else, and a transient error out of retries, is a final failure: ``on_failure`` writes
  it to the dead-letter queue once (``celery ... dlq list|replay|purge``).
- ``report_progress`` publishes a throttled PROGRESS state for long tasks.
- A countdown or ETA past ``MAX_COUNTDOWN`` is refused at publish time, since Redis would
  deliver it twice after the visibility timeout.

Delivery is at-least-once (``acks_late`` + ``reject_on_worker_lost``): a task whose worker dies
runs again. Each task declares ``idempotent``; the non-idempotent ones guard their side effect.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from celery import Task
from celery.exceptions import Retry

from personal_assistant.workers import constants as c
from personal_assistant.workers.backoff import backoff_delay
from personal_assistant.workers.config import WorkerSettings, state_redis_url
from personal_assistant.workers.dead_letters.queue import DeadLetter, DeadLetterQueue
from personal_assistant.workers.errors import is_transient
from personal_assistant.workers.redis_clients import REDIS_TRANSIENT_ERRORS
from personal_assistant.workers.store.engine import STORE_TRANSIENT_ERRORS

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

logger = logging.getLogger(__name__)

# The clients' own errors that may pass (errors.is_transient knows the standard library's).
TRANSIENT_CLIENT_ERRORS = (*REDIS_TRANSIENT_ERRORS, *STORE_TRANSIENT_ERRORS)


@functools.lru_cache(maxsize=4)
def _dead_letter_queue(url: str, max_entries: int) -> DeadLetterQueue:
    return DeadLetterQueue.from_url(url, max_entries=max_entries)


def dead_letter_queue(settings: WorkerSettings) -> DeadLetterQueue:
    """The dead-letter queue of ``settings``: on the broker's Redis (else the result backend's),
    one per URL and process."""
    url = state_redis_url(settings.celery_broker_url, settings.result_backend_url)
    return _dead_letter_queue(url, settings.dlq_max_entries)


class BaseTask(Task):  # type: ignore[misc]
    """Base of every domain task (``@app.task(base=BaseTask, bind=True)``)."""

    #: True when running the task twice has the effect of running it once (redelivery is safe).
    idempotent: ClassVar[bool] = True
    #: Write final failures to the dead-letter queue.
    dead_letter: ClassVar[bool] = True

    #: The app the task is bound to: a WorkerApp, whose settings and components tasks use.
    app: WorkerApp

    _last_progress: float = 0.0

    @property
    def settings(self) -> WorkerSettings:
        """The settings of the app this task belongs to (not the process's environment)."""
        return self.app.settings

    # -- retries ------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Retry:
            raise
        except Exception as exc:
            if not is_transient(exc, also=TRANSIENT_CLIENT_ERRORS):
                raise
            settings = self.settings
            delay = backoff_delay(
                self.request.retries,
                base=settings.retry_backoff_base,
                maximum=settings.retry_backoff_max,
            )
            logger.warning(
                "%s[%s] transient %s: retry %d/%d in %.2fs",
                self.name,
                self.request.id,
                type(exc).__name__,
                self.request.retries + 1,
                self.max_retries,
                delay,
            )
            # Retry re-raises ``exc`` itself once max_retries is reached: a final failure.
            raise self.retry(
                exc=exc, countdown=delay, max_retries=settings.task_max_retries
            ) from exc

    # -- dead letters -------------------------------------------------------------------------
    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Write the final failure to the dead-letter queue (never raises)."""
        if not self.dead_letter or self.request.is_eager:
            return
        delivery = self.request.delivery_info or {}
        letter = DeadLetter(
            task_name=self.name,
            task_id=task_id,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            exception_type=type(exc).__name__,
            exception=str(exc),
            traceback=str(getattr(einfo, "traceback", "") or ""),
            queue=delivery.get("routing_key"),
            priority=delivery.get("priority"),
            retries=int(self.request.retries or 0),
            hostname=self.request.hostname,
        )
        try:
            dead_letter_queue(self.settings).add(letter)
            logger.error(
                "%s[%s] failed for good (%s); dead letter %s",
                self.name,
                task_id,
                letter.exception_type,
                letter.id,
            )
        except Exception:
            # The task already failed; losing the DLQ copy must not hide that in the logs.
            logger.exception(
                "%s[%s] could not be written to the dead-letter queue", self.name, task_id
            )

    # -- publishing ---------------------------------------------------------------------------
    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Publish, refusing a countdown or ETA beyond MAX_COUNTDOWN (see the module doc)."""
        limit = self.settings.max_countdown
        countdown = options.get("countdown")
        eta = options.get("eta")
        wait = float(countdown) if countdown is not None else 0.0
        if eta is not None:
            eta_dt = eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))
            if eta_dt.tzinfo is None:
                eta_dt = eta_dt.replace(tzinfo=UTC)
            wait = max(wait, (eta_dt - datetime.now(UTC)).total_seconds())
        if wait > limit:
            raise ValueError(
                f"{self.name}: countdown/ETA of {wait:.0f}s exceeds MAX_COUNTDOWN ({limit}s); "
                "Redis would redeliver it after the visibility timeout. Schedule it with beat "
                "or raise MAX_COUNTDOWN together with VISIBILITY_TIMEOUT."
            )
        return super().apply_async(args, kwargs, **options)

    # -- progress -----------------------------------------------------------------------------
    def report_progress(self, done: int, total: int | None = None, message: str = "") -> None:
        """Publish ``PROGRESS`` with done/total/percent; throttled, never fails the task."""
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self._last_progress < c.PROGRESS_MIN_INTERVAL_S:
            return
        self._last_progress = now
        meta: dict[str, Any] = {"done": done, "total": total, "message": message}
        if total:
            meta["percent"] = round(100.0 * done / total, 1)
        if self.request.id is None or self.request.called_directly:
            return
        try:
            self.update_state(state="PROGRESS", meta=meta)
        except Exception:
            logger.warning(
                "%s[%s] could not publish progress", self.name, self.request.id, exc_info=True
            )

    # -- diagnostics --------------------------------------------------------------------------
    def describe_execution(self) -> dict[str, Any]:
        """Where this execution runs: queue, worker, process and retry count."""
        delivery = self.request.delivery_info or {}
        return {
            "task": self.name,
            "queue": delivery.get("routing_key"),
            "priority": delivery.get("priority"),
            "hostname": self.request.hostname or socket.gethostname(),
            "pid": os.getpid(),
            "retries": int(self.request.retries or 0),
        }
