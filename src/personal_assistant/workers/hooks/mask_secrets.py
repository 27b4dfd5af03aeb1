"""Masks passwords in URLs in every log line of workers and beat."""

from __future__ import annotations

import logging

from personal_assistant.workers.config import MaskSecretsFilter
from personal_assistant.workers.hooks.registry import WorkerHook


class MaskSecretsHook(WorkerHook):
    """Attaches the masking filter to the handlers Celery configures for its loggers."""

    name = "mask-secrets"

    def on_after_setup_logger(self, *, logger: logging.Logger) -> None:
        """Attach the filter to the handlers Celery just configured."""
        for handler in logger.handlers:
            if not any(isinstance(f, MaskSecretsFilter) for f in handler.filters):
                handler.addFilter(MaskSecretsFilter())

    def on_after_setup_task_logger(self, *, logger: logging.Logger) -> None:
        """Task loggers get their own handlers; mask those too."""
        self.on_after_setup_logger(logger=logger)
