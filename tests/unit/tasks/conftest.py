"""Fixtures of the task tests: cleanup roots of the test's own, set in a clean environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cleanup_files import Roots


@pytest.fixture
def roots(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Roots:
    """TEMP_DIRS and LOG_DIRS pointing at empty directories of this test."""
    temp, logs = tmp_path / "tmp", tmp_path / "logs"
    temp.mkdir()
    logs.mkdir()
    clean_env.setenv("TEMP_DIRS", str(temp))
    clean_env.setenv("LOG_DIRS", str(logs))
    return Roots(temp, logs)
