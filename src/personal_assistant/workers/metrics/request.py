"""The worker's request class with metrics on: each task's lifecycle, recorded where it arrives.

Celery's worker main process builds one request per message and reports each outcome to it
(accepted by a child, succeeded with its run time, failed, retried, rejected, revoked). This
request records those events into the app's :class:`~.recorder.TaskMetricsRecorder` (see
recorder.py for why the main process is the place), and hands failures and successes to the
recorder's listeners (alerting). The recorder is found through the request's app
(``app.metrics_recorder``, set by the metrics hook at worker init and cleared in pool children),
so two apps in one process never share one. With task events left off, Celery reports a success
only to ``on_success``; the class wraps that handler to record it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery.worker.request import Request

from personal_assistant.workers import keys
from personal_assistant.workers.broker.request import DeliveryRequest
from personal_assistant.workers.metrics.recorder import TaskMetricsRecorder
from personal_assistant.workers.metrics.series import TaskSeries

logger = logging.getLogger(__name__)

#: The request class of an app with METRICS_ENABLED (a path, as Celery's ``Task.Request``).
REQUEST_CLASS = f"{__name__}:MetricsRequest"
# Header the producer stamps (before_task_publish) so queue wait excludes nothing but queueing.
PUBLISHED_AT_HEADER = keys.PUBLISHED_AT_HEADER
# Failures that are time limits, for the alerts' task_timeout (the soft limit ends a task too).
TIME_LIMIT_ERRORS = ("TimeLimitExceeded", "SoftTimeLimitExceeded")
# How each end event reads in the collector's (the seed's) vocabulary.
_COLLECTOR_STATUS = {
    "task-succeeded": "completed",
    "task-failed": "failed",
    "task-retried": "retry",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}


class MetricsRequest(DeliveryRequest):
    """Celery's request, recording its lifecycle events into its app's metrics recorder.

    Runs in the worker's main process: that is where every outcome arrives (see module doc).
    Every task passes through here, so the success path is kept to plain attribute reads.
    """

    # Per-request state, with class-level defaults so the hot path never misses an attribute.
    _metric_recorder: TaskMetricsRecorder | None = None
    _metric_series: TaskSeries | None = None
    _metric_wait: float | None = None
    _metrics_ended = False
    _metrics_failed = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap the success handler of the request class Celery derives per task.

        Celery's derived class (worker/request.py: create_request_cls) overrides on_success
        and reports a success only when task events are on. Events on would cost every task
        an event built in the child and in the parent, so they stay off and the success is
        recorded by this wrapper instead; every other outcome reaches send_event regardless.
        """
        super().__init_subclass__(**kwargs)
        inner = cls.__dict__.get("on_success")
        if inner is not None:
            cls.on_success = _recording_success(inner)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        recorder: TaskMetricsRecorder | None = self.app.metrics_recorder
        if recorder is not None:
            queue = (self.delivery_info or {}).get("routing_key") or ""
            self._metric_recorder = recorder
            self._metric_series = series = recorder.series(self.name, queue)
            series.received += 1

    def _queue_wait(self) -> float | None:
        published = self._request_dict.get(PUBLISHED_AT_HEADER)
        if published is None or self.time_start is None:
            return None
        ready_at = float(published)
        if self.eta:  # waiting for an ETA is not queueing
            try:
                ready_at = max(ready_at, _timestamp(self.eta))
            except (TypeError, ValueError):
                return None
        return max(float(self.time_start) - ready_at, 0.0)  # clocks of two hosts may disagree

    def send_event(self, type: str, **fields: Any) -> None:  # Celery's parameter name
        """Record the event, then hand it to Celery (which drops task events: they are off).

        A success is recorded by the on_success wrapper, never here: Celery reports it here
        only when events are on (for the worker's heartbeats, say), and it must count once.
        """
        if type != "task-succeeded":
            self._record_event(type, fields)
        super().send_event(type, **fields)

    def _record_success(self, runtime: float) -> None:
        """The success path of :meth:`_record`, for every task that succeeds."""
        recorder, series = self._metric_recorder, self._metric_series
        if recorder is None or series is None:
            return
        try:
            series.succeeded += 1
            if self.time_start is not None and not self._metrics_ended:
                self._metrics_ended = True
                recorder.task_ended(
                    series, "completed", max(runtime, 0.0), self._metric_wait, self.worker_pid
                )
            if recorder.listeners:
                self._notify(recorder, series.labels, "task-succeeded", {"runtime": runtime}, None)
        except Exception:
            logger.exception("recording the success of %s failed; task unaffected", self.id)

    def _record_event(self, type_: str, fields: dict[str, Any]) -> None:
        recorder, series = self._metric_recorder, self._metric_series
        if recorder is not None and series is not None:
            try:
                self._record(recorder, series, type_, fields)
            except Exception:
                logger.exception("recording %s of %s failed; task unaffected", type_, self.id)

    def _record(
        self,
        recorder: TaskMetricsRecorder,
        series: TaskSeries,
        type_: str,
        fields: dict[str, Any],
    ) -> None:
        started = self.time_start is not None and not self._metrics_ended
        if type_ == "task-started":
            self._metric_wait = wait = self._queue_wait()
            recorder.task_started(series, wait, self.worker_pid)
            return
        error = None
        if type_ == "task-failed":
            # Celery reports a hard time limit twice (the pool's error callback, then
            # on_timeout): the first report is the task's end, the second is not counted.
            if self._metrics_failed:
                return
            self._metrics_failed = True
        if type_ == "task-succeeded":
            series.succeeded += 1
        elif type_ == "task-failed":
            error = self._failure_text(fields)
            exception = error.split("(", 1)[0] or "Exception"
            series.failed[exception] = series.failed.get(exception, 0) + 1
        elif type_ == "task-retried":
            series.retried += 1
        elif type_ == "task-rejected":
            reason = "requeued" if fields.get("requeue") else "rejected"
            series.rejected[reason] = series.rejected.get(reason, 0) + 1
        elif type_ == "task-revoked":
            series.revoked += 1
        else:
            return
        if started:
            self._metrics_ended = True
            runtime = fields.get("runtime")
            if runtime is None:
                runtime = time.time() - float(self.time_start)
            recorder.task_ended(
                series,
                _COLLECTOR_STATUS[type_],
                max(float(runtime), 0.0),
                self._metric_wait,
                self.worker_pid,
            )
        if recorder.listeners and type_ in ("task-failed", "task-succeeded"):
            self._notify(recorder, series.labels, type_, fields, error)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, **kw: Any) -> Any:
        """Celery's failure handler; the exception is kept for the metric's label first."""
        self._failure_exc = _unwrapped(getattr(exc_info, "exception", None))
        return super().on_failure(exc_info, send_failed_event=send_failed_event, **kw)

    def _failure_text(self, fields: dict[str, Any]) -> str:
        # The pool reports an exception that crossed the process boundary wrapped in
        # billiard's ExceptionWithTraceback; the label and the alerts need the real one.
        text = str(fields.get("exception", ""))
        real = getattr(self, "_failure_exc", None)
        if text.startswith("ExceptionWithTraceback") and real is not None:
            return f"{type(real).__name__}({real})"
        return text

    def _notify(
        self,
        recorder: TaskMetricsRecorder,
        labels: tuple[str, str, str],
        type_: str,
        fields: dict[str, Any],
        error: str | None,
    ) -> None:
        event: dict[str, Any] = {
            "task_name": labels[0],
            "hostname": labels[1],
            "queue": labels[2],
            "task_id": self.id,
        }
        if type_ == "task-succeeded":
            event.update(event="task_succeeded", runtime=fields.get("runtime"))
        elif (error or "").startswith(TIME_LIMIT_ERRORS):
            event.update(event="task_timeout", error=error)
        else:
            event.update(event="task_failed", error=error)
        for listener in recorder.listeners:
            listener(event)


def _recording_success(inner: Callable[..., Any]) -> Callable[..., Any]:
    """``inner`` (a request's on_success) that first records a success in the recorder."""

    def on_success(self: MetricsRequest, failed__retval__runtime: Any, **kw: Any) -> Any:
        failed, _, runtime = failed__retval__runtime
        if not failed:
            self._record_success(float(runtime))
        return inner(self, failed__retval__runtime, **kw)

    return on_success


# Celery always derives a class per task (wrapped above); the base records successes too.
MetricsRequest.on_success = _recording_success(Request.on_success)


def _unwrapped(exc: Any) -> Any:
    """The exception inside billiard's ExceptionWithTraceback (or ``exc`` itself)."""
    return getattr(exc, "exc", exc) if type(exc).__name__ == "ExceptionWithTraceback" else exc


def _timestamp(value: Any) -> float:
    from datetime import datetime  # noqa: PLC0415 - only for ETA tasks, a rare path

    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()
