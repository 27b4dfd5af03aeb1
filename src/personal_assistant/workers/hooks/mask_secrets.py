"""Masks passwords in URLs in every log line of workers and beat, and httpx's request URLs."""

from __future__ import annotations

import logging

from personal_assistant.workers.config import MaskSecretsFilter, mask_httpx_request_urls
from personal_assistant.workers.hooks.registry import WorkerHook


class MaskSecretsHook(WorkerHook):
    """Attaches the masking filter to the handlers Celery configures for its loggers."""

    name = "mask-secrets"

    def on_after_setup_logger(self, *, logger: logging.Logger) -> None:
        """Attach the filter to the handlers Celery just configured, and hide the URLs of
        httpx's request lines (feeds and the chat-completions API)."""
        mask_httpx_request_urls()
        for handler in logger.handlers:
            if not any(isinstance(f, MaskSecretsFilter) for f in handler.filters):
                handler.addFilter(MaskSecretsFilter())

    def on_after_setup_task_logger(self, *, logger: logging.Logger) -> None:
        """Task loggers get their own handlers; mask those too."""
        self.on_after_setup_logger(logger=logger)
