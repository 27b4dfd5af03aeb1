"""The cleanup tasks clean only the configured roots, by age and pattern, and refuse bad input.

Their arguments come from messages (workflow files, beat entries, replayed dead letters), so they
may only make a cleanup stricter than the settings, never wider.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from personal_assistant.workers.app import WorkerApp
from personal_assistant.workers.cleanup.tree import CleanupError
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.tasks import base_tasks
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


@pytest.fixture
def roots(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Roots:
    """TEMP_DIRS and LOG_DIRS pointing at empty directories of this test."""
    temp, logs = tmp_path / "tmp", tmp_path / "logs"
    temp.mkdir()
    logs.mkdir()
    clean_env.setenv("TEMP_DIRS", str(temp))
    clean_env.setenv("LOG_DIRS", str(logs))
    return Roots(temp, logs)


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


def test_a_max_age_hours_above_the_setting_keeps_more_files(
    roots: Roots, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("TEMP_FILE_MAX_AGE_HOURS", "1")
    make_file(roots.temp / "five-hours", timedelta(hours=5))
    make_file(roots.temp / "two-hours", timedelta(hours=2))

    report = run_temp_cleanup(max_age_hours=3)

    assert files_under(roots.temp) == {"two-hours"}
    assert report["files_deleted"] == 1


def test_a_max_age_hours_below_the_setting_never_deletes_younger_files(roots: Roots) -> None:
    make_file(roots.temp / "two-hours", timedelta(hours=2))  # the setting keeps a day
    make_file(roots.temp / "two-days", timedelta(days=2))

    run_temp_cleanup(max_age_hours=0)

    assert files_under(roots.temp) == {"two-hours"}


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


def test_a_patterns_argument_cannot_widen_the_configured_temp_patterns(
    roots: Roots, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("TEMP_FILE_PATTERNS", "*.tmp,*.part")
    make_file(roots.temp / "a.tmp", OLD)
    make_file(roots.temp / "b.keep", OLD)

    run_temp_cleanup(patterns=["*"])

    assert files_under(roots.temp) == {"b.keep"}


def test_a_temp_dir_that_is_the_workers_home_is_refused(
    roots: Roots, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    make_file(home / ".ssh" / "id_ed25519", OLD)
    clean_env.setenv("HOME", str(home))
    clean_env.setenv("TEMP_DIRS", str(home))

    with pytest.raises(CleanupError, match="it is the home directory"):
        run_temp_cleanup()

    assert files_under(home) == {".ssh/id_ed25519"}


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

    result = in_app_of_env(cleanup_temp_files).apply(kwargs={"max_age_hours": -1})

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


def test_a_temp_dir_holding_the_data_dir_is_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "app" / "var"
    make_file(data / "redis" / "appendonly.aof", OLD)
    clean_env.setenv("DATA_DIR", str(data))
    clean_env.setenv("TEMP_DIRS", str(tmp_path / "app"))

    with pytest.raises(CleanupError, match="contains DATA_DIR"):
        run_temp_cleanup()

    assert files_under(data) == {"redis/appendonly.aof"}


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


def test_log_cleanup_max_age_days_and_dry_run(roots: Roots, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LOG_MAX_AGE_DAYS", "1")
    make_file(roots.logs / "ten-days.log", timedelta(days=10))
    make_file(roots.logs / "two-days.log", timedelta(days=2))

    dry = run_log_cleanup(max_age_days=5, dry_run=True)
    assert dry["files_matched"] == 1
    assert files_under(roots.logs) == {"ten-days.log", "two-days.log"}

    real = run_log_cleanup(max_age_days=5)
    assert real["files_deleted"] == 1
    assert files_under(roots.logs) == {"two-days.log"}


def test_a_log_cleanup_asking_for_every_file_at_any_age_deletes_only_old_logs(
    roots: Roots,
) -> None:
    # The workflow: cleanup_old_logs with {max_age_days: 0, patterns: ["*"]}.
    make_file(roots.logs / "notes.txt", OLD)
    make_file(roots.logs / "yesterday.log", timedelta(days=1))  # the setting keeps 14 days
    make_file(roots.logs / "old.log", OLD)

    result = in_app_of_env(cleanup_old_logs).apply(kwargs={"max_age_days": 0, "patterns": ["*"]})

    assert result.state == "SUCCESS"
    assert files_under(roots.logs) == {"notes.txt", "yesterday.log"}


def test_roots_cannot_be_passed_as_an_argument(roots: Roots) -> None:
    make_file(roots.temp / "old.log", OLD)

    result = in_app_of_env(cleanup_old_logs).apply(kwargs={"roots": [str(roots.temp)]})

    assert result.state == "FAILURE"
    assert isinstance(result.result, TypeError)
    assert files_under(roots.temp) == {"old.log"}


INF = float("inf")
NAN = float("nan")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_age_days": -1}, "max_age_days must not be negative"),
        ({"max_age_days": "0"}, "max_age_days must be a number of days, got str"),
        ({"max_age_days": True}, "max_age_days must be a number of days, got bool"),
        ({"max_age_days": INF}, "max_age_days must be a finite number of days, got inf"),
        ({"max_age_days": NAN}, "max_age_days must be a finite number of days, got nan"),
        ({"max_age_days": 1e300}, "max_age_days must be at most 36500 days"),
        ({"max_age_days": 10**5000}, "must be at most 36500 days, got an integer of 16610 bits"),
        ({"max_age_days": -(10**5000)}, "must not be negative (got an integer of 16610 bits)"),
        ({"patterns": "*"}, "patterns must be a list of patterns, got the string '*'"),
        ({"patterns": "*" * 1_000_000}, "patterns must be a list of patterns, got the string '**"),
        ({"patterns": {"*": 1}}, "patterns must be a list of patterns, got dict"),
        ({"patterns": []}, "patterns is empty"),
        ({"patterns": [1]}, "patterns must hold strings, got int"),
        ({"patterns": ["/var/log/*"]}, "pattern '/var/log/*' in patterns is refused"),
        ({"patterns": ["../*"]}, "pattern '../*' in patterns is refused"),
        ({"patterns": ["*.log"] * 10_000}, "patterns holds 10000 patterns; at most 64"),
        ({"dry_run": "false"}, "dry_run must be true or false, got str"),
        ({"dry_run": 0}, "dry_run must be true or false, got int"),
    ],
)
def test_a_bad_log_cleanup_argument_is_refused_naming_it_and_nothing_is_deleted(
    roots: Roots, kwargs: dict[str, Any], problem: str
) -> None:
    make_file(roots.logs / "old.log", OLD)
    make_file(roots.logs / "notes.txt", OLD)

    result = in_app_of_env(cleanup_old_logs).apply(kwargs=kwargs)

    assert result.state == "FAILURE"
    assert isinstance(result.result, CleanupError)
    assert problem in str(result.result)
    assert len(str(result.result)) < 200  # one line, never an echo of a huge argument
    assert files_under(roots.logs) == {"old.log", "notes.txt"}


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_age_hours": "24"}, "max_age_hours must be a number of hours, got str"),
        ({"max_age_hours": 1e7}, "max_age_hours must be at most 876000 hours"),
        ({"patterns": ["a/*"]}, "pattern 'a/*' in patterns is refused"),
        ({"dry_run": None}, "dry_run must be true or false, got NoneType"),
    ],
)
def test_a_bad_temp_cleanup_argument_is_refused_naming_it_and_nothing_is_deleted(
    roots: Roots, kwargs: dict[str, Any], problem: str
) -> None:
    make_file(roots.temp / "old.bin", OLD)

    result = in_app_of_env(cleanup_temp_files).apply(kwargs=kwargs)

    assert result.state == "FAILURE"
    assert isinstance(result.result, CleanupError)
    assert problem in str(result.result)
    assert files_under(roots.temp) == {"old.bin"}


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("LOG_MAX_AGE_DAYS", "inf", "LOG_MAX_AGE_DAYS must be between 0 and 36500 days"),
        ("LOG_MAX_AGE_DAYS", "1e300", "LOG_MAX_AGE_DAYS must be between 0 and 36500 days"),
        ("LOG_FILE_PATTERNS", "*.log,../*", "pattern '../*' in LOG_FILE_PATTERNS is refused"),
    ],
)
def test_a_bad_log_setting_is_refused_naming_the_variable(
    roots: Roots, clean_env: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    clean_env.setenv(variable, value)
    make_file(roots.logs / "old.log", OLD)

    with pytest.raises(CleanupError, match=re.escape(problem)):
        run_log_cleanup()

    assert files_under(roots.logs) == {"old.log"}


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
