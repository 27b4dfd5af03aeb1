"""The app's type: each app owns its settings, config, request class and components (sent
counter, domain counters, workflow policy, metrics recorder), so several apps live side by
side in one process."""

from __future__ import annotations

import pytest
import redis
from celery import Task, signals

from personal_assistant.workers import constants as c
from personal_assistant.workers.app import create_app
from personal_assistant.workers.broker.request import REQUEST_PATH
from personal_assistant.workers.broker.transport import TRANSPORT_PATH
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.metrics.domain_counters import read_domain_counts
from personal_assistant.workers.metrics.domain_series import EMAIL_SENT
from personal_assistant.workers.metrics.request import REQUEST_CLASS as METRICS_REQUEST
from personal_assistant.workers.metrics.sent_counter import read_sent
from personal_assistant.workers.tasks import file_tasks
from personal_assistant.workers.tasks.base_tasks import BaseTask
from tests.support.apps import MakeApp

pytestmark = pytest.mark.usefixtures("clean_env")

PROBE = file_tasks.probe.name
CELERY_DEFAULT_REQUEST = Task.Request  # what Celery itself gives every task class


def test_an_app_built_from_settings_carries_them_and_their_config(make_app: MakeApp) -> None:
    app = make_app(celery_broker_url="redis://cache.internal:6379/0", worker_concurrency=3)

    assert app.settings.worker_concurrency == app.conf.worker_concurrency == 3
    assert app.conf.broker_transport == TRANSPORT_PATH
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_default_queue == c.DEFAULT_QUEUE


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


def test_closing_an_app_adds_its_domain_counts_not_yet_flushed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    app = create_app(load_settings(celery_broker_url=redis_url))
    assert app.domain_metrics is app.domain_metrics
    app.domain_metrics.count(EMAIL_SENT, amount=2)

    app.close()

    assert read_domain_counts(redis_client) == {("pa_email_sent",): 2}


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


def test_a_closed_app_leaves_no_receiver_on_celerys_signals() -> None:
    before = len(signals.before_task_publish.receivers)
    app = create_app(load_settings(metrics_enabled=True))
    assert len(signals.before_task_publish.receivers) > before

    app.close()

    assert len(signals.before_task_publish.receivers) == before
