"""MaskSecretsHook: the handlers Celery sets up for its loggers mask passwords in URLs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from personal_assistant.workers.config import MaskSecretsFilter
from personal_assistant.workers.hooks.mask_secrets import MaskSecretsHook

HIDDEN = "hunter2-s3cret"


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, logging.Handler, io.StringIO]]:
    """A logger with a handler writing to a buffer, as Celery configures its own."""
    out = io.StringIO()
    log = logging.getLogger("tests.unit.hooks.mask_secrets")
    handler = logging.StreamHandler(out)
    log.addHandler(handler)
    yield log, handler, out
    log.removeHandler(handler)


def test_a_password_in_a_url_is_masked_in_the_configured_handlers(
    logger: tuple[logging.Logger, logging.Handler, io.StringIO],
) -> None:
    log, _, out = logger
    MaskSecretsHook().on_after_setup_logger(logger=log)

    log.warning("broker redis://alice:%s@cache.internal:6379/0 is down", HIDDEN)

    assert HIDDEN not in out.getvalue()
    assert "cache.internal:6379/0 is down" in out.getvalue()


def test_each_handler_gets_the_filter_once_however_often_celery_sets_it_up(
    logger: tuple[logging.Logger, logging.Handler, io.StringIO],
) -> None:
    log, handler, _ = logger
    hook = MaskSecretsHook()
    hook.on_after_setup_logger(logger=log)
    hook.on_after_setup_task_logger(logger=log)

    assert sum(isinstance(f, MaskSecretsFilter) for f in handler.filters) == 1


def test_httpx_request_lines_show_no_path_or_query_once_loggers_are_set_up(
    logger: tuple[logging.Logger, logging.Handler, io.StringIO],
) -> None:
    log, _, _ = logger
    httpx_logger = logging.getLogger("httpx")
    before = list(httpx_logger.filters)
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, 'HTTP Request: %s %s "%s %d %s"',
        ("GET", f"https://cal.example.com/private/{HIDDEN}.ics", "HTTP/1.1", 200, "OK"),
        None,
    )  # fmt: skip
    try:
        MaskSecretsHook().on_after_setup_logger(logger=log)
        MaskSecretsHook().on_after_setup_logger(logger=log)  # installed once, not twice
        added = [f for f in httpx_logger.filters if f not in before]
        assert len(added) <= 1
        assert httpx_logger.filter(record)
    finally:
        for extra in [f for f in httpx_logger.filters if f not in before]:
            httpx_logger.removeFilter(extra)

    assert record.getMessage() == 'HTTP Request: GET https://cal.example.com/**** "HTTP/1.1 200 OK"'
    assert HIDDEN not in record.getMessage()
