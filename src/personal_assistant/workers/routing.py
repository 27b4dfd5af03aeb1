"""Queues and routes: each domain module's tasks go to the domain's queue, at its priority.

Priorities follow the seed's intent (higher runs first; see constants.py and
broker/priority.py). A route's priority is a default: a caller's ``priority=`` wins.
Priorities order messages *within* a queue; queues themselves are served by their own workers.
"""

from __future__ import annotations

from typing import Any

from personal_assistant.workers import constants as c

# Module of each queue's tasks; a task's queue is decided by the module that defines it.
QUEUE_MODULES: dict[str, str] = {queue: f"{c.TASKS_PACKAGE}.{queue}" for queue in c.QUEUES}


def task_routes() -> dict[str, dict[str, Any]]:
    """Glob routes by module: ``...tasks.ai_tasks.*`` goes to ``ai_tasks``, and so on."""
    return {
        f"{module}.*": {
            "queue": queue,
            "routing_key": queue,
            "priority": c.DOMAIN_PRIORITIES[queue],
        }
        for queue, module in QUEUE_MODULES.items()
    }


def home_queue(task_name: str) -> str | None:
    """The domain queue of a task defined in a domain module; None for any other task."""
    for queue, module in QUEUE_MODULES.items():
        if task_name.startswith(module + "."):
            return queue
    return None


def queue_for_task(task_name: str) -> str:
    """The queue a task of this name is routed to (the default queue when no route matches)."""
    return home_queue(task_name) or c.DEFAULT_QUEUE
