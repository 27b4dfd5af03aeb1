"""The app and its factory: nothing happens on import, and each app owns its settings, hooks,
request class and components, so several apps live side by side in one process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Task

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.hook import AlertingHook
from personal_assistant.workers.app import WorkerApp, create_app
from personal_assistant.workers.broker.request import REQUEST_PATH
from personal_assistant.workers.broker.transport import TRANSPORT_PATH
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.hooks.registry import HookOrderError
from personal_assistant.workers.metrics.hook import MetricsHook
from personal_assistant.workers.metrics.request import REQUEST_CLASS as METRICS_REQUEST
from personal_assistant.workers.metrics.sent_counter import read_sent
from personal_assistant.workers.tasks import file_tasks
from personal_assistant.workers.tasks.base_tasks import BaseTask
from personal_assistant.workers.workflows.hook import WorkflowHook
from tests.support.worker import worker_env

pytestmark = pytest.mark.usefixtures("clean_env")

PROBE = file_tasks.probe.name
CELERY_DEFAULT_REQUEST = Task.Request  # what Celery itself gives every task class
MakeApp = Callable[..., WorkerApp]

# Run in a fresh interpreter: this test process imported celery_app long ago (conftest).
IMPORT_ONLY = """
import sys
from celery import _state
import personal_assistant.workers.app
from personal_assistant.workers.config import get_settings
print(
    "personal_assistant.workers.celery_app" in sys.modules,
    len(list(_state._get_active_apps())),
    get_settings.cache_info().currsize,
)
"""


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """Apps built by create_app from settings given as keywords (closed afterwards)."""
    apps: list[WorkerApp] = []

    def make(**settings: Any) -> WorkerApp:
        app = create_app(load_settings(**settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def test_importing_app_builds_no_app_and_reads_no_environment(tmp_path: Path) -> None:
    # Variables create_app would refuse: importing must not even look at them.
    env = worker_env("not a url", {"METRICS_PORT": "not-a-port"})

    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ONLY],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    celery_app_imported, apps_created, settings_read = proc.stdout.split()
    assert celery_app_imported == "False"
    assert apps_created == "0"
    assert settings_read == "0"


def test_an_app_built_from_settings_carries_them_and_their_config(make_app: MakeApp) -> None:
    app = make_app(celery_broker_url="redis://cache.internal:6379/0", worker_concurrency=3)

    assert app.settings.worker_concurrency == app.conf.worker_concurrency == 3
    assert app.conf.broker_transport == TRANSPORT_PATH
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_default_queue == c.DEFAULT_QUEUE


def test_two_apps_keep_their_own_settings_hooks_and_workflow_hook(make_app: MakeApp) -> None:
    one, other = make_app(worker_concurrency=1), make_app(worker_concurrency=2)

    assert (one.settings.worker_concurrency, other.settings.worker_concurrency) == (1, 2)
    assert one.hooks is not other.hooks
    assert one.hooks.owner is one and other.hooks.owner is other
    assert isinstance(one.workflow_hook, WorkflowHook)
    assert one.workflow_hook in one.hooks.hooks
    assert one.workflow_hook.app is one
    assert other.workflow_hook is not one.workflow_hook


def test_each_app_gets_its_workflow_policy_from_its_settings(make_app: MakeApp) -> None:
    strict, open_to_tests = make_app(), make_app(workflow_allowed_tasks=["tests.*"])

    assert strict.workflow_policy.refusal("tests.noop") is not None
    assert open_to_tests.workflow_policy.refusal("tests.noop") is None


def test_each_app_has_one_sent_counter_of_its_own(make_app: MakeApp) -> None:
    one, other = make_app(), make_app()

    assert one.sent_counter is one.sent_counter
    assert one.sent_counter is not other.sent_counter


def test_closing_an_app_adds_the_sends_it_counted_but_not_yet_flushed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    app = create_app(load_settings(celery_broker_url=redis_url))
    app.sent_counter.count("tests.noop", c.FILE_QUEUE)

    app.close()

    [(labels, sent)] = read_sent(redis_client).items()
    assert (labels[0], labels[2], sent) == ("tests.noop", c.FILE_QUEUE, 1)


def test_the_metrics_recorder_is_absent_until_the_metrics_hook_installs_it(
    make_app: MakeApp,
) -> None:
    app = make_app(metrics_enabled=True)

    assert app.metrics_recorder is None  # installed at worker init, in the worker only


def test_two_apps_give_their_tasks_their_own_request_class_and_leave_base_task_alone(
    make_app: MakeApp,
) -> None:
    with_metrics = make_app(metrics_enabled=True)
    without = make_app(metrics_enabled=False)

    assert with_metrics.tasks[PROBE].Request == with_metrics.Task.Request == METRICS_REQUEST
    assert without.tasks[PROBE].Request == without.Task.Request == REQUEST_PATH
    assert with_metrics.tasks[PROBE].Request == METRICS_REQUEST  # not overwritten by `without`
    assert BaseTask.Request == CELERY_DEFAULT_REQUEST


def test_a_task_naming_its_own_request_class_keeps_it(make_app: MakeApp) -> None:
    app = make_app(metrics_enabled=True)

    def custom() -> None:
        """A task with its own request class."""

    task = app.task(name="unit.custom_request", shared=False, Request=REQUEST_PATH)(custom)

    assert app.tasks[task.name].Request == REQUEST_PATH


def test_alerting_is_registered_after_the_metrics_it_listens_to(make_app: MakeApp) -> None:
    app = make_app(metrics_enabled=True, alerting_enabled=True)

    names = [hook.name for hook in app.hooks.hooks]
    assert names.index(MetricsHook.name) < names.index(AlertingHook.name)


def test_alerting_added_without_the_metrics_hook_is_refused(make_app: MakeApp) -> None:
    app = make_app(metrics_enabled=False)

    with pytest.raises(HookOrderError, match="'alerting' requires 'metrics'"):
        app.hooks.add(AlertingHook(app))

    assert AlertingHook not in {type(hook) for hook in app.hooks.hooks}
