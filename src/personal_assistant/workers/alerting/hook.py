"""Wires alerting into the workers (ALERTING_ENABLED): the fast path in each worker's main
process, and the periodic evaluator a pool child keeps for ``evaluate_alerts``.

What is evaluated, and how each alert is sent once, is evaluator.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from personal_assistant.workers.alerting.evaluator import (
    EVENT_CONDITIONS,
    Alerting,
)
from personal_assistant.workers.hooks.registry import WorkerHook
from personal_assistant.workers.metrics.hook import MetricsHook

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

logger = logging.getLogger(__name__)


class AlertingHook(WorkerHook):
    """Fast-path alerting in the worker's main process.

    It listens to the task events of the app's metrics recorder, which the metrics hook
    installs at the same signal (worker init): hence ``requires``, checked at registration.
    """

    name = "alerting"
    requires = (MetricsHook.name,)

    def __init__(self, app: WorkerApp) -> None:
        self.app = app
        self.alerting: Alerting | None = None

    def on_worker_init(self, *, sender: Any) -> None:
        """Build the event rules' manager and listen to the recorder's task events."""
        recorder = self.app.metrics_recorder
        if recorder is None:
            logger.warning("alerting needs the metrics recorder; alerts are off")
            return
        self.alerting = Alerting(
            self.app.settings, str(self.app.conf.broker_url), recorder.registry, EVENT_CONDITIONS
        )
        recorder.listeners.append(self.alerting.on_task_event)

    def on_worker_ready(self, *, sender: Any) -> None:
        """Re-check the windows from the worker's event loop."""
        loop = getattr(sender, "hub", None)  # worker_ready's sender is the consumer
        if self.alerting is not None and loop is not None:
            loop.call_repeatedly(self.app.settings.alert_eval_interval, self.alerting.tick)

    def on_worker_shutdown(self, *, sender: Any) -> None:
        """Let queued notifications go out, then stop the channel threads."""
        if self.alerting is not None:
            self.alerting.close()
