"""Building the worker application: :func:`create_app`, with no side effect on import.

:func:`create_app` makes a :class:`WorkerApp` (worker_app.py) from settings and registers the
hooks those settings switch on, in their declared order. Importing this module builds no app
and reads no environment; the composition root (celery_app.py) builds the deployment's app.
"""

from __future__ import annotations

from personal_assistant.workers.alerting.evaluator import check_alerting_config
from personal_assistant.workers.alerting.hook import AlertingHook
from personal_assistant.workers.broker.compat import check_kombu
from personal_assistant.workers.broker.safety import BrokerSafetyHook
from personal_assistant.workers.config import WorkerSettings, get_settings, is_redis_url
from personal_assistant.workers.hooks.default_priority import DefaultPriorityHook
from personal_assistant.workers.hooks.mask_secrets import MaskSecretsHook
from personal_assistant.workers.hooks.startup import StartupHook
from personal_assistant.workers.hooks.timer_heap import TimerHeapHook
from personal_assistant.workers.hooks.worker_queue import WorkerQueueHook
from personal_assistant.workers.metrics.hook import MetricsHook, PublishTimestampHook, SentCountHook
from personal_assistant.workers.worker_app import WorkerApp
from personal_assistant.workers.workflows.hook import WorkflowHook

__all__ = ["WorkerApp", "create_app"]


def create_app(settings: WorkerSettings | None = None) -> WorkerApp:
    """Build an app from ``settings`` (the environment's when omitted) with the hooks they
    switch on; raises ConfigError when the alerting configuration is invalid or the installed
    kombu is not one whose internals the workflow outbox relies on (broker/compat.py)."""
    check_kombu()
    app = WorkerApp(settings or get_settings())
    app.hooks.add(MaskSecretsHook())
    app.hooks.add(StartupHook(app))  # before MetricsHook, whose heartbeat claims the node name
    app.hooks.add(DefaultPriorityHook())
    app.hooks.add(WorkerQueueHook(app.settings))
    app.hooks.add(TimerHeapHook())
    app.workflow_hook = app.hooks.add(WorkflowHook(app))
    app.hooks.add(BrokerSafetyHook(app))
    if app.settings.metrics_enabled:
        app.hooks.add(PublishTimestampHook())
        if is_redis_url(str(app.conf.broker_url)):
            app.hooks.add(SentCountHook(app))
        app.hooks.add(MetricsHook(app))
    if app.settings.alerting_enabled:
        check_alerting_config(app.settings)
        app.hooks.add(AlertingHook(app))  # requires MetricsHook (checked by the registry)
    return app
