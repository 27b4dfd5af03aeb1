"""The worker application's type: :class:`WorkerApp`, Celery's app carrying its components.

A :class:`WorkerApp` holds the project's components as typed attributes: its settings, its hook
registry, its request class, the metrics recorder, the workflow hook and policy, the sent
counter. Components are handed the app and find each other there, never through module
globals. This module imports no hook, so every component can name the type without an import
cycle; app.py's :func:`~personal_assistant.workers.app.create_app` builds one and registers
the hooks its settings switch on.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import Celery
from celery.app import backends

from personal_assistant.workers.alerting.evaluator import STATE_CONDITIONS, Alerting
from personal_assistant.workers.broker.request import REQUEST_PATH
from personal_assistant.workers.broker.results import backend_class_for
from personal_assistant.workers.celery_config import build_celery_config
from personal_assistant.workers.config import WorkerSettings
from personal_assistant.workers.hooks.registry import HookRegistry, publishing
from personal_assistant.workers.metrics.domain_counters import DomainCounters, counters_for_broker
from personal_assistant.workers.metrics.hash_counter import RedisHashCounter
from personal_assistant.workers.metrics.recorder import TaskMetricsRecorder
from personal_assistant.workers.metrics.request import REQUEST_CLASS as METRICS_REQUEST_PATH
from personal_assistant.workers.metrics.sent_counter import SentCounter, counter_for_broker
from personal_assistant.workers.tasks import TASK_MODULES
from personal_assistant.workers.workflows import outbox
from personal_assistant.workers.workflows.link import SuccessRecorder
from personal_assistant.workers.workflows.policy import DEFAULT_POLICY, WorkflowTaskPolicy

__all__ = ["WorkerApp"]


class WorkerApp(Celery):  # type: ignore[misc]
    """Celery app carrying its settings, its hook registry and the components built on them.

    Attributes set here are always present; the components that need a running worker or a
    broker are made on first use (``sent_counter``, ``domain_metrics``, ``workflow_outbox``,
    ``periodic_alerting``)
    or installed by their hook (``metrics_recorder``).
    """

    #: The settings this app was built from (tasks read these, not the process's).
    settings: WorkerSettings
    #: The hooks plugged into Celery's signals for this app.
    hooks: HookRegistry
    #: Import path of the request class every task of this app uses in the worker.
    request_class: str
    #: The worker's task metrics, installed by MetricsHook at worker init in the main process
    #: (None elsewhere: producers, pool children, METRICS_ENABLED=false).
    metrics_recorder: TaskMetricsRecorder | None
    #: The hook recording workflow task ends, which workflow links hand successes to (None
    #: until create_app registers it).
    workflow_hook: SuccessRecorder | None
    #: The tasks workflows of this app may run: the domain tasks plus WORKFLOW_ALLOWED_TASKS.
    workflow_policy: WorkflowTaskPolicy

    def __init__(self, settings: WorkerSettings, **kwargs: Any) -> None:
        super().__init__("personal_assistant_workers", include=list(TASK_MODULES), **kwargs)
        self.settings = settings
        self.hooks = HookRegistry(self)
        self.config_from_object(build_celery_config(settings))
        # Every task's request: put back when cancelled on a lost connection, and with
        # metrics on, recording its lifecycle. Set on this app's own classes only (see
        # _task_from_fun): several apps live in one process, each with its own settings.
        self.request_class = METRICS_REQUEST_PATH if settings.metrics_enabled else REQUEST_PATH
        self.Task.Request = self.request_class
        self.metrics_recorder = None
        self.workflow_hook = None
        patterns = settings.workflow_allowed_tasks
        self.workflow_policy = (
            WorkflowTaskPolicy.from_patterns(patterns) if patterns else DEFAULT_POLICY
        )

    @cached_property
    def sent_counter(self) -> SentCounter:
        """This app's count of published tasks, added to its broker's Redis in batches."""
        return counter_for_broker(str(self.conf.broker_url))

    @cached_property
    def domain_metrics(self) -> DomainCounters:
        """This app's domain counters (e-mails, feed events, AI requests), added to its
        broker's Redis in batches."""
        return counters_for_broker(str(self.conf.broker_url))

    @cached_property
    def workflow_outbox(self) -> bool:
        """True when workflow commits push the ready tasks' messages themselves (a Redis
        broker holding the workflow state); else the runtime publishes after each commit."""
        return outbox.commit_can_publish(self)

    @cached_property
    def periodic_alerting(self) -> Alerting:
        """The state rules' evaluator of this app in this process (built in the pool child
        that first runs ``evaluate_alerts``)."""
        return Alerting(self.settings, str(self.conf.broker_url), None, STATE_CONDITIONS)

    def _get_backend(self) -> Any:
        """Celery's backend for the configured URL; the plain Redis one stores each state in
        one round trip (broker/results.py)."""
        cls, url = backends.by_url(self.backend_cls or self.conf.result_backend, self.loader)
        return backend_class_for(cls)(app=self, url=url)

    def _task_from_fun(
        self,
        fun: Any,
        name: str | None = None,
        base: type | None = None,
        bind: bool = False,
        **options: Any,
    ) -> Any:
        """Celery's task factory (``@app.task`` and shared tasks), giving each task class it
        creates this app's request class unless the task names its own.

        Celery copies ``options`` into the class it makes for the task, so the request class
        is set on that class: a base class shared by several apps (BaseTask) is never changed.
        """
        options.setdefault("Request", self.request_class)
        return super()._task_from_fun(fun, name=name, base=base, bind=bind, **options)

    def close(self) -> None:
        """Add the sends counted but not yet in Redis, disconnect this app's hooks from
        Celery's signals, then close Celery's connections.

        Without the flush, the counter's timer would add them after the app is gone (tests
        that empty Redis between apps would find another app's counts).
        """
        for made in ("sent_counter", "domain_metrics"):  # only those ever made
            counter: RedisHashCounter | None = self.__dict__.get(made)
            if counter is not None:
                counter.flush()
        self.hooks.close()
        super().close()

    def send_task(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``send_task`` (every ``apply_async``, retry and chain step goes through it),
        marked as this app's publish for the hooks that count sends."""
        with publishing(self):
            return super().send_task(*args, **kwargs)
