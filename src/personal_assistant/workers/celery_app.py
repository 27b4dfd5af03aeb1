"""The Celery application: ``celery -A personal_assistant.workers.celery_app worker|beat|...``.

Settings come from the environment (config.py); a bad value stops start-up here with one line
naming the variable. Components plug into Celery's signals through ``app.hooks`` (hooks.py).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery

from personal_assistant.workers.alerting.hook import AlertingHook, check_alerting_config
from personal_assistant.workers.broker.request import REQUEST_PATH
from personal_assistant.workers.broker.safety import BrokerSafetyHook
from personal_assistant.workers.celery_config import build_celery_config
from personal_assistant.workers.config import (
    ConfigError,
    MaskSecretsFilter,
    WorkerSettings,
    get_settings,
    is_redis_url,
)
from personal_assistant.workers.constants import PRIORITY_DEFAULT
from personal_assistant.workers.hooks.registry import HookRegistry, WorkerHook, publishing
from personal_assistant.workers.metrics import recorder as prometheus_metrics
from personal_assistant.workers.metrics.hook import (
    MetricsHook,
    PublishTimestampHook,
    SentCountHook,
)
from personal_assistant.workers.tasks import TASK_MODULES
from personal_assistant.workers.tasks.base_tasks import BaseTask
from personal_assistant.workers.workflows.hook import WorkflowHook


class MaskSecretsHook(WorkerHook):
    """Masks passwords in URLs in every log line of workers and beat."""

    name = "mask-secrets"

    def on_after_setup_logger(self, *, logger: logging.Logger) -> None:
        """Attach the filter to the handlers Celery just configured."""
        for handler in logger.handlers:
            if not any(isinstance(f, MaskSecretsFilter) for f in handler.filters):
                handler.addFilter(MaskSecretsFilter())

    def on_after_setup_task_logger(self, *, logger: logging.Logger) -> None:
        """Task loggers get their own handlers; mask those too."""
        self.on_after_setup_logger(logger=logger)


class DefaultPriorityHook(WorkerHook):
    """Gives a message published without a priority the default level.

    Only ``Task.apply_async`` applies ``task_default_priority``; ``send_task`` by name and
    ``celery call`` publish none, and kombu then sends 0, the lowest level here.
    """

    name = "default-priority"

    def before_task_publish(
        self,
        *,
        task_name: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        routing_key: str,
    ) -> None:
        """Fill in the priority (Celery publishes this same dict right after the signal)."""
        if properties.get("priority") is None:
            properties["priority"] = PRIORITY_DEFAULT


class WorkerApp(Celery):  # type: ignore[misc]
    """Celery app carrying its settings and its hook registry."""

    def __init__(self, settings: WorkerSettings, **kwargs: Any) -> None:
        super().__init__("personal_assistant_workers", include=list(TASK_MODULES), **kwargs)
        self.settings = settings
        self.hooks = HookRegistry(self)
        self.config_from_object(build_celery_config(settings))
        # Every task's request (plain tasks and BaseTask alike): put back when cancelled on a
        # lost connection, and with metrics on, recording its lifecycle.
        request = prometheus_metrics.REQUEST_CLASS if settings.metrics_enabled else REQUEST_PATH
        self.Task.Request = request
        BaseTask.Request = request

    def send_task(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``send_task`` (every ``apply_async``, retry and chain step goes through it),
        marked as this app's publish for the hooks that count sends."""
        with publishing(self):
            return super().send_task(*args, **kwargs)


def create_app(settings: WorkerSettings | None = None) -> WorkerApp:
    """Build the app from ``settings`` (the environment's when omitted)."""
    new_app = WorkerApp(settings or get_settings())
    new_app.hooks.add(MaskSecretsHook())
    new_app.hooks.add(DefaultPriorityHook())
    new_app.hooks.add(WorkflowHook(new_app))
    new_app.hooks.add(BrokerSafetyHook(new_app))
    if new_app.settings.metrics_enabled:
        new_app.hooks.add(PublishTimestampHook())
        if is_redis_url(str(new_app.conf.broker_url)):
            new_app.hooks.add(SentCountHook(new_app))
        new_app.hooks.add(MetricsHook(new_app))
    if new_app.settings.alerting_enabled:
        check_alerting_config(new_app.settings)
        new_app.hooks.add(AlertingHook(new_app))  # after MetricsHook: it needs the recorder
    return new_app


def _load_settings_or_exit() -> WorkerSettings:
    try:
        return get_settings()
    except ConfigError as exc:
        # One line naming the variable, instead of a traceback from deep inside Celery.
        sys.stderr.write(f"personal_assistant.workers: {exc}\n")
        raise SystemExit(2) from None


def _create_app_or_exit() -> WorkerApp:
    settings = _load_settings_or_exit()
    try:
        return create_app(settings)
    except ConfigError as exc:
        sys.stderr.write(f"personal_assistant.workers: {exc}\n")
        raise SystemExit(2) from None


app: WorkerApp = _create_app_or_exit()
