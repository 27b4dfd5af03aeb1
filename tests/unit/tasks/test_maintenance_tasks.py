"""Log cleanup (``cleanup_old_logs``) cleans only old log files under the configured roots, keeps
directories, and refuses bad arguments and settings naming them, deleting nothing.

Its arguments come from messages (workflow files, beat entries, replayed dead letters), so they
may only make a cleanup stricter than the settings, never wider.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta
from typing import Any

import pytest

from personal_assistant.workers.cleanup.tree import CleanupError
from personal_assistant.workers.tasks.maintenance_tasks import cleanup_old_logs
from tests.support.cleanup_files import (
    OLD,
    YOUNG,
    Roots,
    files_under,
    in_app_of_env,
    make_file,
    run_log_cleanup,
)


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
