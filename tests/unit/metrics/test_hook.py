"""The metrics hook: what the worker reports to it lands in the app's own recorder."""

from __future__ import annotations

import pytest

from personal_assistant.workers.app import WorkerApp
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.metrics.hook import MetricsHook
from personal_assistant.workers.metrics.recorder import TaskMetricsRecorder
from tests.support.recorder_samples import LABELS, sample


def test_a_rejected_message_reported_by_the_worker_is_counted_in_its_apps_recorder(
    clean_env: pytest.MonkeyPatch,
) -> None:
    recorder = TaskMetricsRecorder("w1@host")
    app = WorkerApp(load_settings(), set_as_current=False)
    app.metrics_recorder = recorder  # as MetricsHook installs it at worker init
    try:
        MetricsHook(app).on_message_rejected(
            reason="unknown_task", task_name="tests.noop", queue="file_tasks", task_id="x"
        )
    finally:
        app.close()

    assert sample(recorder, "celery_task_rejected_total", reason="unknown_task", **LABELS) == 1
