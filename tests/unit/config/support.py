"""What the config tests share: a password to look for in all that is shown, and the message
of the ConfigError a bad variable raises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from personal_assistant.workers.config import ConfigError, load_settings
from tests.support.worker import APP, worker_env

# The password the tests look for in everything that is printed or logged.
HIDDEN = "hunter2-s3cret"
URL_WITH_SECRET = f"redis://alice:{HIDDEN}@cache.internal:6380/1"


def config_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    """Set the variables, load the settings, and return the ConfigError's message."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


# A password holding the characters that end a URL's parts: urllib splits the authority at
# the first '/' or '?', and '@' and ':' also delimit userinfo.
AWKWARD = "pa/ss"


def celery_start_errors(cwd: Path, variables: dict[str, str]) -> tuple[int, list[str], str]:
    """Run ``celery -A <app> inspect ping`` with these variables (the broker never answers):
    its exit code, the non-blank lines it wrote to stderr, and all it wrote."""
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "inspect", "ping"],
        env=worker_env("redis://127.0.0.1:1/0", variables),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode, lines, proc.stderr + proc.stdout
