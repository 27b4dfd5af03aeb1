"""ConfigError: one line naming the variable, in load_settings and at start-up (exit code 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.worker import APP, worker_env
from tests.unit.config.support import AWKWARD, celery_start_errors, config_error


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENVIRONMENT", "prod"),
        ("WORKER_CONCURRENCY", "abc"),
        ("WORKER_CONCURRENCY", "0"),
        ("CELERY_BROKER_URL", "redis://localhost:abc/0"),
        ("CELERY_BROKER_URL", "redsi://localhost:6379/0"),
        ("CELERY_BROKER_URL", "redis://:6379/0"),
        ("CELERY_BROKER_URL", "redis://localhost:6379/zero"),
        ("CELERY_RESULT_BACKEND", "mongodb://localhost/results"),
        ("WORKER_QUEUE", "ai_tasks,bogus_tasks"),
        ("WORKER_QUEUE", ""),
    ],
    ids=[
        "environment-prod",
        "concurrency-abc",
        "concurrency-0",
        "broker-port-abc",
        "broker-unknown-scheme",
        "broker-missing-host",
        "broker-db-not-a-number",
        "backend-unknown-scheme",
        "queue-unknown",
        "queue-empty",
    ],
)
def test_a_bad_value_gives_a_one_line_config_error_naming_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    message = config_error(clean_env, **{variable: value})

    assert f"{variable}:" in message
    assert "\n" not in message


def test_a_bad_value_in_the_cli_stops_celery_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    code, lines, output = celery_start_errors(tmp_path, {"WORKER_CONCURRENCY": "abc"})

    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "WORKER_CONCURRENCY" in lines[0]
    assert "Traceback" not in output


def test_the_start_up_error_never_shows_a_password_holding_a_slash(tmp_path: Path) -> None:
    env = worker_env(f"redis://alice:{AWKWARD}@cache.internal:6379/0")

    proc = subprocess.run(
        [sys.executable, "-c", f"import {APP}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 2, proc.stderr
    assert "CELERY_BROKER_URL" in proc.stderr
    assert "redis://alice:****@cache.internal:6379/0" in proc.stderr
    for fragment in (AWKWARD, "'pa'", "ss@"):  # not even urllib's "... integer value as 'pa'"
        assert fragment not in proc.stderr
