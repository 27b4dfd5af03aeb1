"""Dead letters as the tests write them: one entry, and its JSON with fields changed."""

from __future__ import annotations

import json
from typing import Any

from personal_assistant.workers import constants as c
from personal_assistant.workers.dead_letters.queue import DeadLetter

PROBE = f"{c.TASKS_PACKAGE}.file_tasks.probe"


def letter(n: int = 0, **fields: Any) -> DeadLetter:
    """A dead letter failed at time ``n`` (so the order of several is known)."""
    values: dict[str, Any] = {
        "task_name": PROBE,
        "task_id": f"task-{n}",
        "args": [n, "x"],
        "kwargs": {"n": n},
        "exception_type": "PermanentError",
        "exception": f"failure {n}",
        "traceback": f"Traceback (most recent call last):\n  failure {n}",
        "queue": c.FILE_QUEUE,
        "priority": 3,
        "failed_at": 1_700_000_000.0 + n,
    }
    values.update(fields)
    return DeadLetter(**values)


MISSING = object()


def fields_of(original: DeadLetter, **changes: Any) -> str:
    """``original``'s JSON with fields changed (a value of ``MISSING`` removes the field)."""
    data = json.loads(original.to_json())
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not MISSING})
