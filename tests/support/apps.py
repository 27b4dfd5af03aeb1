"""The type of the ``make_app`` fixture (tests/unit/conftest.py): it builds apps with
``create_app`` from settings given as keywords, and closes them after the test."""

from __future__ import annotations

from collections.abc import Callable

from personal_assistant.workers.app import WorkerApp

MakeApp = Callable[..., WorkerApp]
