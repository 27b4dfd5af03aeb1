"""Temp-file cleanup (``cleanup_temp_files``) cleans only the configured roots, by age and
pattern, refuses bad input, and with no roots configured cleans under DATA_DIR (both tasks).

Its arguments come from messages (workflow files, beat entries, replayed dead letters), so they
may only make a cleanup stricter than the settings, never wider.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from personal_assistant.workers.cleanup.tree import CleanupError
from personal_assistant.workers.tasks import base_tasks
from personal_assistant.workers.tasks.file_tasks import cleanup_temp_files
from tests.support.cleanup_files import (
    OLD,
    YOUNG,
    Roots,
    files_under,
    in_app_of_env,
    make_file,
    run_log_cleanup,
    run_temp_cleanup,
)

# --- cleanup_temp_files ---------------------------------------------------------------------------


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


# --- both cleanups --------------------------------------------------------------------------------


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
