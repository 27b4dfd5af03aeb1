"""``celery ... db upgrade|current``: migrate the store, say where it stands, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from click.testing import CliRunner, Result

from personal_assistant.workers.celery_app import create_app
from personal_assistant.workers.cli.db_command import db
from personal_assistant.workers.config import load_settings
from tests.support.worker import APP, REPO, worker_env


def run_db(tmp_path: Path, *args: str) -> Result:
    """The command in this process, on an app whose DATA_DIR is under ``tmp_path``."""
    app = create_app(load_settings(data_dir=tmp_path / "var"))
    try:
        return CliRunner().invoke(db, list(args), obj=SimpleNamespace(app=app))
    finally:
        app.close()


def test_upgrade_migrates_a_new_store_then_has_nothing_to_do(tmp_path: Path) -> None:
    first = run_db(tmp_path, "upgrade", "--json")
    second = run_db(tmp_path, "upgrade")
    current = run_db(tmp_path, "current", "--json")

    assert first.exit_code == 0, first.output
    before_after = json.loads(first.output)
    assert before_after["before"] is None
    assert before_after["after"]
    assert "nothing to do" in second.output
    assert json.loads(current.output) == {
        "current": before_after["after"],
        "head": before_after["after"],
        "up_to_date": True,
    }
    assert (tmp_path / "var" / "assistant.db").is_file()


def test_current_exits_1_when_an_upgrade_is_due(tmp_path: Path) -> None:
    result = run_db(tmp_path, "current")

    assert result.exit_code == 1
    assert "upgrade due (celery ... db upgrade)" in result.output


def test_an_unreachable_store_is_one_masked_line_and_exit_code_69(tmp_path: Path) -> None:
    # Through the celery command itself: the sub-command is found by its entry point.
    env = worker_env(
        "redis://127.0.0.1:1/0", {"DATABASE_URL": "postgresql://app:hunter2@127.0.0.1:1/x"}
    )
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "db", "upgrade"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 69
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: store postgresql://app:****@127.0.0.1:1/x unavailable")
    assert "hunter2" not in result.stdout + result.stderr
