"""The composition root: ``celery -A personal_assistant.workers.celery_app worker|beat|...``.

Builds the deployment's :data:`app` from the environment (config/) on import; a bad value stops
start-up here with one line naming the variable. The app type and its factory live in app.py
(importable without building anything); they are re-exported here for the seed's callers.
"""

from __future__ import annotations

import sys

from personal_assistant.workers.app import WorkerApp, create_app
from personal_assistant.workers.config import ConfigError, WorkerSettings, get_settings

__all__ = ["WorkerApp", "app", "create_app"]


def _load_settings_or_exit() -> WorkerSettings:
    try:
        return get_settings()
    except ConfigError as exc:
        # One line naming the variable, instead of a traceback from deep inside Celery.
        sys.stderr.write(f"personal_assistant.workers: {exc}\n")
        raise SystemExit(2) from None


def _create_app_or_exit() -> WorkerApp:
    settings = _load_settings_or_exit()
    try:
        return create_app(settings)
    except ConfigError as exc:
        sys.stderr.write(f"personal_assistant.workers: {exc}\n")
        raise SystemExit(2) from None


app: WorkerApp = _create_app_or_exit()
