"""METRICS_ENABLED=false removes every metrics hook and the request class."""

from __future__ import annotations

import pytest

from personal_assistant.workers.app import create_app
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.metrics.hook import MetricsHook, PublishTimestampHook
from personal_assistant.workers.metrics.request import REQUEST_CLASS


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
