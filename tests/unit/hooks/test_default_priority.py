"""DefaultPriorityHook: a publish without a priority gets the default level, others keep theirs."""

from __future__ import annotations

from typing import Any

import pytest

from personal_assistant.workers.constants import PRIORITY_DEFAULT
from personal_assistant.workers.hooks.default_priority import DefaultPriorityHook


def published(properties: dict[str, Any]) -> dict[str, Any]:
    """The properties after the hook saw a publish of ``tests.noop`` with ``properties``."""
    DefaultPriorityHook().before_task_publish(
        task_name="tests.noop", headers={}, properties=properties, routing_key="file_tasks"
    )
    return properties


@pytest.mark.parametrize("properties", [{}, {"priority": None}], ids=["absent", "none"])
def test_a_publish_without_a_priority_gets_the_default_level(properties: dict[str, Any]) -> None:
    assert published(properties)["priority"] == PRIORITY_DEFAULT


@pytest.mark.parametrize("priority", [0, 3, 9])
def test_a_publish_with_a_priority_keeps_it(priority: int) -> None:
    assert published({"priority": priority})["priority"] == priority
