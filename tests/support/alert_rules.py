"""A valid alert rule to build tests on: change only the fields a test is about."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from personal_assistant.workers.alerting.rule import AlertRule

WINDOW = timedelta(minutes=5)


def make_rule(**overrides: Any) -> AlertRule:
    fields: dict[str, Any] = {
        "name": "failures",
        "condition": "task_failure",
        "threshold": 1,
        "window": WINDOW,
        "channels": ["log"],
        "message_template": "{count} failures of {task_name}",
    }
    return AlertRule(**{**fields, **overrides})
