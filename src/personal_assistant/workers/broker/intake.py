"""The worker's consumer, screening each message before Celery runs it (``worker_consumer``).

Celery's consumer logs and drops a message it cannot run (an unknown task, an unparseable ETA,
a body it cannot decode) and lets others through to fail later or silently (a header of the
wrong type, arguments the task does not take). This subclass checks every message first
(poison.py) and *rejects* the ones no worker can run: the message is written to the dead-letter
queue with its reason and its raw bytes, the task's result is marked failed (so a caller
waiting on it gets an error, not a hang), ``celery_task_rejected_total{reason}`` counts it
(through the ``on_message_rejected`` hook), and only then is it acknowledged. If the dead
letter cannot be written (Redis is unreachable), the message is put back instead.

Screening costs one decode of the body in the main process (Celery's children decode it again
to run the task): a few microseconds for a task message, bounded by the transport's size limit.

The same consumer reconnects to a lost broker sooner than Celery's 2, 4, 6 ... 30 s
(constants.BROKER_RECONNECT_*): a Redis restart takes about a second.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
from celery.exceptions import NotRegistered
from celery.utils.time import maybe_iso8601
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError
from vine import promise

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker import poison
from personal_assistant.workers.broker.poison import Rejection
from personal_assistant.workers.config import state_redis_url
from personal_assistant.workers.dead_letters.queue import DeadLetter, DeadLetterQueue

logger = logging.getLogger(__name__)

CONSUMER_PATH = f"{__name__}:ScreeningConsumer"


class ScreeningConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with poison messages dead-lettered instead of dropped."""

    _dead_letters: DeadLetterQueue | None = None

    def ensure_connected(self, conn: Any) -> Any:
        """Celery's connection loop, retrying on this project's schedule."""
        conn.ensure_connection = functools.partial(
            conn.ensure_connection,
            interval_start=c.BROKER_RECONNECT_FIRST_S,
            interval_step=c.BROKER_RECONNECT_STEP_S,
            interval_max=c.BROKER_RECONNECT_MAX_S,
        )
        return super().ensure_connected(conn)

    def create_task_handler(self, promise: Any = promise) -> Any:
        """Celery's handler, behind the screen."""
        handle = super().create_task_handler(promise)
        connection_errors = tuple(self.connection_errors or ())

        def on_task_received(message: Any) -> Any:
            try:
                rejection = self.screen(message)
            except connection_errors:
                raise
            except Exception as exc:
                rejection = Rejection(poison.MALFORMED, f"unreadable message: {exc!r:.200}")
            if rejection is not None:
                return self.reject_message(message, rejection)
            return handle(message)

        return on_task_received

    def screen(self, message: Any) -> Rejection | None:
        """Why ``message`` cannot run on this worker, or None when it can."""
        headers = message.headers
        checks = (
            poison.poison_of,
            _protocol_2,
            poison.screen_headers,
            self._known_task,
            lambda h: poison.screen_eta(h, maybe_iso8601),
        )
        for check in checks:
            found = check(headers)
            if found is not None:
                return found
        return self._screen_body(message)

    def _known_task(self, headers: Any) -> Rejection | None:
        name = headers["task"]
        if name not in self.strategies:
            return Rejection(poison.UNKNOWN_TASK, f"no task named {name!r} on this worker")
        return None

    def _screen_body(self, message: Any) -> Rejection | None:
        try:
            body = message.decode()
        except ContentDisallowed as exc:
            return Rejection(poison.CONTENT_DISALLOWED, str(exc))
        except (DecodeError, ValueError, TypeError) as exc:
            return Rejection(poison.BAD_BODY, f"the body cannot be decoded: {exc}")
        task = self.app.tasks[message.headers["task"]]
        check = getattr(task, "__header__", None) if getattr(task, "typing", True) else None
        return poison.screen_body(body, check)

    def reject_message(self, message: Any, rejection: Rejection) -> None:
        """Dead-letter ``message`` with ``rejection``, count it, then acknowledge it."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        task_id = _text_or_none(headers.get("id"))
        name = _text_or_none(headers.get("task"))
        if task_id is None and name is None:
            task_id, name = poison.named_in_tail(headers)
        delivery = message.delivery_info or {}
        queue = str(delivery.get("routing_key") or "")
        letter = DeadLetter(
            task_name=name or "(unreadable)",
            task_id=task_id or str(message.delivery_tag),
            args=[],
            kwargs={},
            exception_type="Rejected",
            exception=str(rejection),
            traceback="",
            queue=queue or None,
            priority=(message.properties or {}).get("priority"),
            hostname=self.hostname,
            reason=rejection.reason,
            raw=poison.describe_raw(headers, message.body, c.DLQ_MAX_FIELD_CHARS),
        )
        try:
            self.dead_letters().add(letter)
        except (redis.RedisError, ValueError) as exc:
            logger.error(
                "could not dead-letter rejected message %s (%s): %s; putting it back",
                letter.task_id,
                rejection,
                exc,
            )
            message.reject_log_error(logger, self.connection_errors, requeue=True)
            return
        logger.error(
            "rejected message %s (%s) from %s: %s; dead letter %s",
            letter.task_id,
            letter.task_name,
            queue or "?",
            rejection,
            letter.id,
        )
        if task_id and name:
            self._mark_failed(task_id, name, rejection)
        message.ack_log_error(logger, self.connection_errors)
        self.app.hooks.emit(
            "on_message_rejected",
            reason=rejection.reason,
            task_name=name or "(unreadable)",
            queue=queue,
            task_id=task_id,
        )

    def dead_letters(self) -> DeadLetterQueue:
        """The dead-letter queue on this app's state Redis (opened on first use)."""
        if self._dead_letters is None:
            settings = self.app.settings
            url = state_redis_url(str(self.app.conf.broker_url), str(self.app.conf.result_backend))
            self._dead_letters = DeadLetterQueue.from_url(url, max_entries=settings.dlq_max_entries)
        return self._dead_letters

    def _mark_failed(self, task_id: str, name: str, rejection: Rejection) -> None:
        error = NotRegistered(name) if rejection.reason == poison.UNKNOWN_TASK else None
        try:
            self.app.backend.mark_as_failure(task_id, error or ValueError(str(rejection)))
        except Exception:
            logger.warning("could not mark rejected task %s failed", task_id, exc_info=True)

    # Celery's own handlers for what slips past the screen: dead-letter instead of dropping.
    def on_unknown_message(self, body: Any, message: Any) -> None:
        """A message that is not a task message."""
        self.reject_message(message, Rejection(poison.MALFORMED, "not a Celery task message"))

    def on_unknown_task(self, body: Any, message: Any, exc: Any) -> None:
        """A task name this worker does not know."""
        self.reject_message(message, Rejection(poison.UNKNOWN_TASK, str(exc)))

    def on_invalid_task(self, body: Any, message: Any, exc: Any) -> None:
        """A task message Celery refuses (bad ETA or expiry, disallowed content)."""
        text = str(exc)
        if isinstance(exc, ContentDisallowed):
            reason = poison.CONTENT_DISALLOWED
        elif "ETA" in text or "expires" in text:
            reason = poison.BAD_ETA
        else:
            reason = poison.BAD_HEADER
        self.reject_message(message, Rejection(reason, text))

    def on_decode_error(self, message: Any, exc: Any) -> None:
        """A body that cannot be decoded."""
        self.reject_message(message, Rejection(poison.BAD_BODY, str(exc)))


def _protocol_2(headers: Any) -> Rejection | None:
    if isinstance(headers, dict) and "task" not in headers and "id" not in headers:
        return Rejection(
            poison.BAD_HEADER, "no 'task' header (Celery message protocol 1 is not accepted)"
        )
    return None


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
