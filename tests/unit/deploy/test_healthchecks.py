"""The healthcheck the compose file gives beat, run as the container runs it, against a real beat:
healthy while that beat serves its /healthz, unhealthy when nothing answers on its port. (The
worker's check, the same command on the worker's own server, is tested in
tests/unit/monitoring/test_health_check.py.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker" / "docker-compose.prod.yml").read_text("utf-8"))
CONTAINER_PORT = "9808"


def beat_healthcheck(port: int) -> list[str]:
    """The scheduler service's healthcheck command, on ``port`` instead of the container's."""
    test: list[str] = COMPOSE["services"]["scheduler"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1] == "python"
    assert CONTAINER_PORT in test
    return [sys.executable, *(str(port) if word == CONTAINER_PORT else word for word in test[2:])]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_the_beat_healthcheck_passes_on_a_ticking_beat_and_fails_with_no_beat_listening(
    beat_metrics: Callable[..., Any],
) -> None:
    port = beat_metrics()

    healthy = run(beat_healthcheck(port))
    nobody = run(beat_healthcheck(free_port()))

    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.startswith("ok")
    assert nobody.returncode == 1
    assert "UNHEALTHY: no health endpoint" in nobody.stdout
