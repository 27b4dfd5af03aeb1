"""The cleanup tasks clean only the configured roots, by age and pattern, and refuse bad input."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from personal_assistant.workers.tasks import base_tasks
from personal_assistant.workers.tasks.file_tasks import cleanup_temp_files
from personal_assistant.workers.tasks.maintenance_tasks import cleanup_old_logs
from personal_assistant.workers.utils.file_cleanup import CleanupError

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


@pytest.fixture
def roots(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Roots:
    """TEMP_DIRS and LOG_DIRS pointing at empty directories of this test."""
    temp, logs = tmp_path / "tmp", tmp_path / "logs"
    temp.mkdir()
    logs.mkdir()
    clean_env.setenv("TEMP_DIRS", str(temp))
    clean_env.setenv("LOG_DIRS", str(logs))
    return Roots(temp, logs)


def run_temp_cleanup(**kwargs: Any) -> dict[str, Any]:
    """Run the task's body in this process, through BaseTask.__call__ (no broker, no backend)."""
    report: dict[str, Any] = cleanup_temp_files(**kwargs)
    return report


def run_log_cleanup(**kwargs: Any) -> dict[str, Any]:
    report: dict[str, Any] = cleanup_old_logs(**kwargs)
    return report


# --- cleanup_temp_files ----------------------------------------------------------------------


def test_old_temp_files_are_deleted_and_young_ones_kept(roots: Roots) -> None:
    make_file(roots.temp / "old.bin", OLD, size=100)
    make_file(roots.temp / "upload" / "old-part", OLD, size=20)
    make_file(roots.temp / "young.bin", YOUNG)

    report = run_temp_cleanup()

    assert files_under(roots.temp) == {"young.bin"}
    assert report["files_deleted"] == 2
    assert report["bytes_freed"] == 120
    assert report["roots"] == [str(roots.temp.resolve())]
    assert report["dry_run"] is False


def test_max_age_hours_narrows_what_counts_as_old(roots: Roots) -> None:
    make_file(roots.temp / "two-hours", timedelta(hours=2))
    make_file(roots.temp / "ten-minutes", timedelta(minutes=10))

    report = run_temp_cleanup(max_age_hours=1)

    assert files_under(roots.temp) == {"ten-minutes"}
    assert report["files_deleted"] == 1


def test_the_default_max_age_comes_from_the_settings(
    roots: Roots, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("TEMP_FILE_MAX_AGE_HOURS", "1")
    make_file(roots.temp / "two-hours", timedelta(hours=2))
    make_file(roots.temp / "ten-minutes", timedelta(minutes=10))

    run_temp_cleanup()

    assert files_under(roots.temp) == {"ten-minutes"}


def test_patterns_narrow_which_temp_files_are_deleted(roots: Roots) -> None:
    make_file(roots.temp / "a.tmp", OLD)
    make_file(roots.temp / "b.keep", OLD)

    run_temp_cleanup(patterns=["*.tmp"])

    assert files_under(roots.temp) == {"b.keep"}


def test_a_dry_run_deletes_nothing_and_reports_what_would_go(roots: Roots) -> None:
    make_file(roots.temp / "old.bin", OLD, size=100)
    make_file(roots.temp / "deep" / "old.bin", OLD, size=5)
    make_file(roots.temp / "young.bin", YOUNG)

    report = run_temp_cleanup(dry_run=True)

    assert files_under(roots.temp) == {"old.bin", "deep/old.bin", "young.bin"}
    assert report["dry_run"] is True
    assert report["files_matched"] == 2
    assert report["files_deleted"] == 0
    assert report["bytes_freed"] == 105


def test_the_filesystem_root_as_temp_dir_is_refused_naming_it(
    roots: Roots, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("TEMP_DIRS", "/")

    with pytest.raises(CleanupError, match=r"cleanup root '/' is refused"):
        run_temp_cleanup()


def test_a_missing_temp_dir_is_refused_with_a_clear_error(
    roots: Roots, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "never-created"
    clean_env.setenv("TEMP_DIRS", str(missing))

    with pytest.raises(CleanupError) as caught:
        run_temp_cleanup()

    assert str(missing) in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_a_negative_max_age_is_refused_and_nothing_is_deleted(roots: Roots) -> None:
    make_file(roots.temp / "old.bin", OLD)

    with pytest.raises(ValueError, match="max_age_hours must not be negative"):
        run_temp_cleanup(max_age_hours=-1)

    assert files_under(roots.temp) == {"old.bin"}


def test_a_bad_request_fails_at_once_without_a_retry(
    roots: Roots, clean_env: pytest.MonkeyPatch
) -> None:
    retries: list[int] = []

    def recording_backoff(n: int, **kwargs: Any) -> float:
        retries.append(n)
        return 0.0

    clean_env.setattr(base_tasks, "backoff_delay", recording_backoff)

    result = cleanup_temp_files.apply(kwargs={"max_age_hours": -1})

    assert retries == []
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)


def test_empty_old_directories_are_removed_after_temp_cleanup(roots: Roots) -> None:
    stale = roots.temp / "stale"
    make_file(stale / "old.bin", OLD)
    stamp = time.time() - OLD.total_seconds()
    os.utime(stale, (stamp, stamp))

    report = run_temp_cleanup()

    assert not stale.exists()
    assert report["dirs_removed"] == 1


# --- cleanup_old_logs ------------------------------------------------------------------------


def test_log_cleanup_deletes_only_old_log_files(roots: Roots) -> None:
    for name in ("app.log", "app.log.1", "app.log.2.gz", "worker/beat.log"):
        make_file(roots.logs / name, OLD)
    make_file(roots.logs / "fresh.log", YOUNG)
    make_file(roots.logs / "notes.txt", OLD)
    make_file(roots.logs / "catalog", OLD)

    report = run_log_cleanup()

    assert files_under(roots.logs) == {"fresh.log", "notes.txt", "catalog"}
    assert report["files_deleted"] == 4


def test_log_cleanup_keeps_directories_even_when_empty(roots: Roots) -> None:
    shipper_dir = roots.logs / "worker"
    make_file(shipper_dir / "old.log", OLD)
    stamp = time.time() - OLD.total_seconds()
    os.utime(shipper_dir, (stamp, stamp))

    report = run_log_cleanup()

    assert shipper_dir.is_dir()
    assert list(shipper_dir.iterdir()) == []
    assert report["dirs_removed"] == 0


def test_log_cleanup_never_touches_the_temp_dirs(roots: Roots) -> None:
    make_file(roots.temp / "old.log", OLD)

    run_log_cleanup()

    assert files_under(roots.temp) == {"old.log"}


def test_log_cleanup_max_age_days_and_dry_run(roots: Roots) -> None:
    make_file(roots.logs / "two-days.log", timedelta(days=2))
    make_file(roots.logs / "two-hours.log", timedelta(hours=2))

    dry = run_log_cleanup(max_age_days=1, dry_run=True)
    assert dry["files_matched"] == 1
    assert files_under(roots.logs) == {"two-days.log", "two-hours.log"}

    real = run_log_cleanup(max_age_days=1)
    assert real["files_deleted"] == 1
    assert files_under(roots.logs) == {"two-hours.log"}


def test_a_negative_max_age_days_is_refused(roots: Roots) -> None:
    with pytest.raises(ValueError, match="max_age_days must not be negative"):
        run_log_cleanup(max_age_days=-0.5)


def test_the_filesystem_root_as_log_dir_is_refused_naming_it(
    roots: Roots, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("LOG_DIRS", "/")

    with pytest.raises(CleanupError, match=r"cleanup root '/' is refused"):
        run_log_cleanup()


def test_without_configured_dirs_the_tasks_clean_under_data_dir(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    make_file(data / "tmp" / "old.bin", OLD)
    make_file(data / "logs" / "old.log", OLD)
    make_file(data / "keep" / "old.bin", OLD)
    clean_env.setenv("DATA_DIR", str(data))

    run_temp_cleanup()
    run_log_cleanup()

    assert files_under(data) == {"keep/old.bin"}
