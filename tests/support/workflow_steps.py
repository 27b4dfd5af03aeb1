"""Workflow definitions of ``tests.step`` tasks, and waiting for a workflow to end."""

from __future__ import annotations

from typing import Any, cast

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.workflows.runtime import workflow_status
from tests.support.waiting import wait_for

Q = {"queue": c.MAINTENANCE_QUEUE}


def step(name: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    """A task of the test workflow: runs tests.step with its own name."""
    kwargs = {"name": name, **extra.pop("kwargs", {})}
    return {
        "task": "tests.step",
        "kwargs": kwargs,
        "depends_on": list(depends_on),
        "options": Q,
        **extra,
    }


def ran(client: redis.Redis) -> list[str]:
    """Names of the steps that ran, in order (a step appends its name to ``wf:ran``)."""
    return [raw.decode() for raw in cast("list[bytes]", client.lrange("wf:ran", 0, -1))]


def finished(app: WorkerApp, workflow_id: str, timeout: float = 60) -> dict[str, Any]:
    """The workflow's status once it is no longer running (fails after ``timeout``)."""
    return cast(
        dict[str, Any],
        wait_for(
            lambda: (s := workflow_status(workflow_id, app=app))["state"] != "running" and s,
            timeout=timeout,
            interval=0.1,
        ),
    )
