"""The app factory: nothing happens on import, each app gets the hooks its settings switch on
(in their declared order), and METRICS_ENABLED=false removes every metrics hook and the
request class."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from personal_assistant.workers.alerting.hook import AlertingHook
from personal_assistant.workers.app import create_app
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.metrics.hook import MetricsHook, PublishTimestampHook
from personal_assistant.workers.metrics.request import REQUEST_CLASS
from personal_assistant.workers.workflows.hook import WorkflowHook
from tests.support.apps import MakeApp
from tests.support.worker import worker_env

pytestmark = pytest.mark.usefixtures("clean_env")

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


def test_two_apps_keep_their_own_settings_hooks_and_workflow_hook(make_app: MakeApp) -> None:
    one, other = make_app(worker_concurrency=1), make_app(worker_concurrency=2)

    assert (one.settings.worker_concurrency, other.settings.worker_concurrency) == (1, 2)
    assert one.hooks is not other.hooks
    assert one.hooks.owner is one and other.hooks.owner is other
    assert isinstance(one.workflow_hook, WorkflowHook)
    assert one.workflow_hook in one.hooks.hooks
    assert one.workflow_hook.app is one
    assert other.workflow_hook is not one.workflow_hook


def test_alerting_is_registered_after_the_metrics_it_listens_to(make_app: MakeApp) -> None:
    app = make_app(metrics_enabled=True, alerting_enabled=True)

    names = [hook.name for hook in app.hooks.hooks]
    assert names.index(MetricsHook.name) < names.index(AlertingHook.name)


# --- METRICS_ENABLED ------------------------------------------------------------------------------


def test_with_metrics_disabled_no_metrics_hook_or_request_class_is_installed(
    clean_env: pytest.MonkeyPatch,
) -> None:
    app = create_app(load_settings(metrics_enabled=False))
    kinds = {type(hook) for hook in app.hooks.hooks}
    assert MetricsHook not in kinds and PublishTimestampHook not in kinds
    assert "before_task_publish" in app.hooks.connected_signals()  # default priority only
    assert app.conf.worker_send_task_events is False
    assert app.Task.Request != REQUEST_CLASS


def test_with_metrics_enabled_the_parent_records_through_the_request_class(
    clean_env: pytest.MonkeyPatch,
) -> None:
    app = create_app(load_settings(metrics_enabled=True))
    kinds = {type(hook) for hook in app.hooks.hooks}
    assert {MetricsHook, PublishTimestampHook} <= kinds
    # The request class records in the main process; task events stay off (they cost).
    assert app.conf.worker_send_task_events is False
    assert app.Task.Request == REQUEST_CLASS
