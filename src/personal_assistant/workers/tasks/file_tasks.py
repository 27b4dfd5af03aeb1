"""Tasks of the file domain (queue ``file_tasks``): temporary-file housekeeping.

``cleanup_temp_files`` is idempotent (deleting what is already gone is a no-op), so redelivery
after a lost worker is safe.

The cleanup tasks here and in ``maintenance_tasks`` take their arguments from messages that a
workflow file, a beat entry or a replayed dead letter may have written, so arguments can only
make a cleanup *stricter* than the settings: roots come from the settings alone, a ``patterns``
argument only narrows the configured patterns (a file must match both), and a max-age argument
only raises the configured age (the larger of the two applies). Anything else is refused with a
CleanupError (a ValueError: failed at once, not retried) naming the argument.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from personal_assistant.workers.celery_app import app
from personal_assistant.workers.cleanup.tree import (
    CleanupError,
    RootPolicy,
    cleanup_directory_tree,
    validate_patterns,
)
from personal_assistant.workers.config import WorkerSettings
from personal_assistant.workers.tasks.base_tasks import BaseTask

logger = logging.getLogger(__name__)

MAX_AGE_LIMIT = timedelta(days=36_500)
"""The largest max age accepted, from a setting or an argument: a century keeps every file
anyway, and far larger values overflow ``timedelta`` (a traceback instead of an error)."""


def effective_max_age(
    configured: float,
    requested: object,
    *,
    unit: Literal["hours", "days"],
    setting: str,
    argument: str,
) -> timedelta:
    """The max age a cleanup uses: the configured one, or the requested one if it is larger.

    A request can make the cleanup keep more files, never fewer. ``setting`` and ``argument``
    name the two sources in errors.
    """
    limit = MAX_AGE_LIMIT / timedelta(**{unit: 1})
    if not math.isfinite(configured) or not 0 <= configured <= limit:
        raise CleanupError(f"{setting} must be between 0 and {limit:g} {unit}, got {configured}")
    age = configured
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, (int, float)):
            kind = type(requested).__name__
            raise CleanupError(f"{argument} must be a number of {unit}, got {kind}")
        if isinstance(requested, float) and not math.isfinite(requested):
            raise CleanupError(f"{argument} must be a finite number of {unit}, got {requested}")
        if requested > limit:
            shown = _shown(requested)
            raise CleanupError(f"{argument} must be at most {limit:g} {unit}, got {shown}")
        if requested < 0:
            raise CleanupError(f"{argument} must not be negative (got {_shown(requested)})")
        age = max(configured, float(requested))
    return timedelta(**{unit: age})


def _shown(number: float) -> str:
    """A number for an error message; a huge int is described, since str() of one raises."""
    if isinstance(number, int) and abs(number) >= 10**15:
        return f"an integer of {number.bit_length()} bits"
    return repr(number)


def narrowing_patterns(requested: object) -> tuple[str, ...] | None:
    """The ``patterns`` argument checked (a short list of file-name globs), or None if absent."""
    return None if requested is None else validate_patterns(requested, "patterns")


def check_dry_run(requested: object) -> bool:
    """The ``dry_run`` argument, which must be a real boolean (``"false"`` would be truthy)."""
    if not isinstance(requested, bool):
        raise CleanupError(f"dry_run must be true or false, got {type(requested).__name__}")
    return requested


def run_cleanup(
    task: BaseTask,
    *,
    what: str,
    settings: WorkerSettings,
    roots: Sequence[Path],
    max_age: timedelta,
    patterns: Sequence[str],
    narrow_to: Sequence[str] | None,
    dry_run: bool,
    remove_empty_dirs: bool,
) -> dict[str, Any]:
    """Clean the configured ``roots`` for a task, with progress and a log line of the result."""
    report = cleanup_directory_tree(
        roots,
        max_age=max_age,
        patterns=tuple(patterns),
        narrow_to=narrow_to,
        dry_run=dry_run,
        remove_empty_dirs=remove_empty_dirs,
        progress=lambda seen, deleted: task.report_progress(seen, None, f"{deleted} deleted"),
        policy=RootPolicy.for_settings(settings.data_dir),
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
    """Delete temporary files older than the max age under TEMP_DIRS; report what was freed.

    Arguments only narrow the settings (see the module doc): ``max_age_hours`` applies when it
    exceeds TEMP_FILE_MAX_AGE_HOURS, ``patterns`` further restricts TEMP_FILE_PATTERNS.
    """
    settings = self.settings
    max_age = effective_max_age(
        settings.temp_file_max_age_hours,
        max_age_hours,
        unit="hours",
        setting="TEMP_FILE_MAX_AGE_HOURS",
        argument="max_age_hours",
    )
    return run_cleanup(
        self,
        what="cleanup_temp_files",
        settings=settings,
        roots=settings.cleanup_temp_roots,
        max_age=max_age,
        patterns=validate_patterns(settings.temp_file_patterns, "TEMP_FILE_PATTERNS"),
        narrow_to=narrowing_patterns(patterns),
        dry_run=check_dry_run(dry_run),
        remove_empty_dirs=True,
    )


@app.task(base=BaseTask, bind=True)
def probe(self: BaseTask) -> dict[str, Any]:
    """Answer where it ran: proves end to end that this queue has a live worker."""
    return self.describe_execution()
