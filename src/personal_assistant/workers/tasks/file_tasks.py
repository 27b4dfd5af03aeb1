"""Tasks of the file domain (queue ``file_tasks``): temporary-file housekeeping.

``cleanup_temp_files`` is idempotent (deleting what is already gone is a no-op), so redelivery
after a lost worker is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from personal_assistant.workers.celery_app import app
from personal_assistant.workers.config import get_settings
from personal_assistant.workers.tasks.base_tasks import BaseTask
from personal_assistant.workers.utils.file_cleanup import cleanup_directory_tree

logger = logging.getLogger(__name__)


def run_cleanup(
    task: BaseTask,
    *,
    what: str,
    roots: Sequence[Path],
    max_age: timedelta,
    patterns: Sequence[str],
    dry_run: bool,
    remove_empty_dirs: bool,
) -> dict[str, Any]:
    """Clean the configured ``roots`` for a task, with progress and a log line of the result."""
    report = cleanup_directory_tree(
        roots,
        max_age=max_age,
        patterns=tuple(patterns),
        dry_run=dry_run,
        remove_empty_dirs=remove_empty_dirs,
        progress=lambda seen, deleted: task.report_progress(seen, None, f"{deleted} deleted"),
    )
    logger.info(
        "%s%s: %d file(s), %d bytes %s under %s; %d error(s)",
        what,
        " (dry run)" if dry_run else "",
        report.files_matched,
        report.bytes_freed,
        "would be freed" if dry_run else "freed",
        ", ".join(report.roots),
        len(report.errors),
    )
    return report.as_dict()


@app.task(base=BaseTask, bind=True)
def cleanup_temp_files(
    self: BaseTask,
    max_age_hours: float | None = None,
    patterns: list[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Delete temporary files older than ``max_age_hours`` under TEMP_DIRS; report what was freed.

    Roots come from configuration only, never from the message: a task argument can narrow
    what is deleted (age, patterns, dry run) but never widen where.
    """
    settings = get_settings()
    hours = settings.temp_file_max_age_hours if max_age_hours is None else float(max_age_hours)
    if hours < 0:
        raise ValueError(f"max_age_hours must not be negative (got {hours})")
    return run_cleanup(
        self,
        what="cleanup_temp_files",
        roots=settings.cleanup_temp_roots,
        max_age=timedelta(hours=hours),
        patterns=patterns or settings.temp_file_patterns,
        dry_run=dry_run,
        remove_empty_dirs=True,
    )


@app.task(base=BaseTask, bind=True)
def probe(self: BaseTask) -> dict[str, Any]:
    """Answer where it ran: proves end to end that this queue has a live worker."""
    return self.describe_execution()
