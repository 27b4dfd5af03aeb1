"""A process on the wrong kombu refuses to start: one line, exit code 2, before any work.

Each process makes kombu report a release outside the supported range before anything of the
package is imported, as if that release were installed; the guard reads the same attribute.
No Redis answers at the broker URL: refusing must not need one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from personal_assistant.workers.broker.compat import KOMBU_REQUIREMENT
from tests.support.worker import APP, worker_env

pytestmark = pytest.mark.integration

WRONG_VERSION = "5.5.4"
AS_IF_INSTALLED = f"import kombu; kombu.__version__ = {WRONG_VERSION!r}"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with a worker's environment (broker on port 1)."""
    return subprocess.run(
        [sys.executable, "-c", f"{AS_IF_INSTALLED}\n{code}"],
        env=worker_env("redis://127.0.0.1:1/0"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_refused_in_one_line(proc: subprocess.CompletedProcess[str]) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert f"kombu {WRONG_VERSION} is installed" in lines[0]
    assert f"needs {KOMBU_REQUIREMENT}" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_importing_the_app_on_a_wrong_kombu_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = run_python(f"import {APP}", tmp_path)

    assert_refused_in_one_line(proc)


def test_a_celery_command_on_a_wrong_kombu_exits_2_with_one_line(tmp_path: Path) -> None:
    # Celery's own entry point, as `celery -A ... inspect ping` runs it: the app is loaded
    # before the command does anything, so the command never reaches the broker.
    proc = run_python(
        "import sys\n"
        "from celery.__main__ import main\n"
        f"sys.argv = ['celery', '-A', {APP!r}, 'inspect', 'ping']\n"
        "main()",
        tmp_path,
    )

    assert_refused_in_one_line(proc)
