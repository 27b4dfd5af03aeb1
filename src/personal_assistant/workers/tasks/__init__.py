"""Domain task modules, one per queue; ``TASK_MODULES`` is what workers import."""

from personal_assistant.workers.constants import TASKS_PACKAGE

TASK_MODULES: tuple[str, ...] = tuple(
    f"{TASKS_PACKAGE}.{name}"
    for name in ("ai_tasks", "email_tasks", "file_tasks", "sync_tasks", "maintenance_tasks")
)
