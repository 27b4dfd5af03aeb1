"""Hostile workflow inputs shared by the unit and integration tests (issue 11)."""

from __future__ import annotations

from typing import Any

AI_PROBE = "personal_assistant.workers.tasks.ai_tasks.probe"
CLEANUP_OLD_LOGS = "personal_assistant.workers.tasks.maintenance_tasks.cleanup_old_logs"

# 601 bytes that PyYAML's safe loader expands into billions of strings (nested aliases).
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{name}: &{name} [{','.join(['*' + prev] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def alias_bomb_workflow(task: str = AI_PROBE) -> str:
    """A valid-looking workflow whose one task's kwargs are the alias bomb: 9**9 strings once
    serialised (what storing or echoing the definition does)."""
    kwargs = "".join(f"      {line}\n" for line in ALIAS_BOMB.splitlines())
    return f"tasks:\n  a:\n    task: {task}\n    kwargs:\n{kwargs}"


def shared_list_bomb(levels: int = 20) -> list[Any]:
    """The alias bomb as Python data: small lists shared so often that their JSON is 9**levels
    values long (a few kilobytes in memory)."""
    value: list[Any] = ["x"] * 9
    for _ in range(levels):
        value = [value] * 9
    return value


def cleanup_everything(task_id: str = "wipe") -> dict[str, Any]:
    """The issue's example: cleanup_old_logs told to delete every file, however young."""
    return {
        "tasks": {
            task_id: {"task": CLEANUP_OLD_LOGS, "kwargs": {"max_age_days": 0, "patterns": ["*"]}}
        }
    }


def celery_chunks(inner: str = AI_PROBE) -> dict[str, Any]:
    """The issue's example: celery.chunks carrying a signature of another task, which the worker
    that takes it would run inline, whatever that task's queue."""
    signature: dict[str, Any] = {
        "task": inner,
        "args": [],
        "kwargs": {},
        "options": {},
        "subtask_type": None,
    }
    return {"tasks": {"chunks": {"task": "celery.chunks", "args": [signature, [[1]], 1]}}}
