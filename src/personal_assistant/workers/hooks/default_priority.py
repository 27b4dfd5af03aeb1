"""Gives a message published without a priority the default level."""

from __future__ import annotations

from typing import Any

from personal_assistant.workers.constants import PRIORITY_DEFAULT
from personal_assistant.workers.hooks.registry import WorkerHook


class DefaultPriorityHook(WorkerHook):
    """Fills in ``PRIORITY_DEFAULT`` when a publish carries no priority.

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
