"""Files of a given age under the cleanup roots, and the cleanup tasks run as a worker would.

Tasks read their app's settings: :func:`in_app_of_env` binds a task to an app built from the
environment as it is when called, so a test sets TEMP_DIRS, LOG_DIRS and the rest first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from personal_assistant.workers.app import WorkerApp
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.tasks.base_tasks import BaseTask
from personal_assistant.workers.tasks.file_tasks import cleanup_temp_files
from personal_assistant.workers.tasks.maintenance_tasks import cleanup_old_logs

OLD = timedelta(days=30)
YOUNG = timedelta(minutes=5)


def make_file(path: Path, age: timedelta, size: int = 10) -> Path:
    """A file of ``size`` bytes last modified ``age`` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age.total_seconds()
    os.utime(path, (stamp, stamp))
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@dataclass
class Roots:
    temp: Path
    logs: Path


def in_app_of_env(task: BaseTask) -> BaseTask:
    """``task`` in an app built from the environment as it is now, as a worker started now
    would run it (tasks read their app's settings: set the variables first)."""
    app = WorkerApp(load_settings(), set_as_current=False)
    bound: BaseTask = app.tasks[task.name]
    return bound


def run_temp_cleanup(**kwargs: Any) -> dict[str, Any]:
    """Run the task's body in this process, through BaseTask.__call__ (no broker, no backend)."""
    report: dict[str, Any] = in_app_of_env(cleanup_temp_files)(**kwargs)
    return report


def run_log_cleanup(**kwargs: Any) -> dict[str, Any]:
    report: dict[str, Any] = in_app_of_env(cleanup_old_logs)(**kwargs)
    return report
