"""Fixtures of the unit tests: an environment with none of the workers' variables set, and apps
built by ``create_app`` that are closed after the test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from personal_assistant.workers.app import WorkerApp, create_app
from personal_assistant.workers.config import (
    AlertChannelSettings,
    WorkerSettings,
    get_settings,
    load_settings,
)
from tests.support.apps import MakeApp


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No settings variable in the environment, no ``.env`` in the cwd, a fresh settings cache.

    Tests set variables on the returned monkeypatch; the cache is cleared again afterwards, so
    the next ``get_settings()`` reads the restored environment.
    """
    fields = set(WorkerSettings.model_fields)
    fields |= {AlertChannelSettings.variable(f).lower() for f in AlertChannelSettings.model_fields}
    for key in list(os.environ):
        if key.lower() in fields:
            monkeypatch.delenv(key)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """Apps built by create_app from settings given as keywords (closed afterwards)."""
    apps: list[WorkerApp] = []

    def make(**settings: Any) -> WorkerApp:
        app = create_app(load_settings(**settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
