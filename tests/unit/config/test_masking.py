"""Masking: passwords out of URLs and texts (mask_url) and out of every log record
(MaskSecretsFilter)."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable

import pytest
import redis

from personal_assistant.workers.config import MaskSecretsFilter, mask_url
from tests.unit.config.support import AWKWARD, HIDDEN, URL_WITH_SECRET


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (URL_WITH_SECRET, "redis://alice:****@cache.internal:6380/1"),
        (f"redis://:{HIDDEN}@cache.internal:6379/0", "redis://:****@cache.internal:6379/0"),
        (f"amqp://guest:{HIDDEN}@rabbit:5672//", "amqp://guest:****@rabbit:5672//"),
        ("redis://cache.internal:6379/0", "redis://cache.internal:6379/0"),
        ("redis://alice@cache.internal:6379/0", "redis://alice@cache.internal:6379/0"),
    ],
)
def test_mask_url_hides_the_password_and_keeps_user_and_host(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_masks_every_url_in_a_longer_text() -> None:
    text = f"broker {URL_WITH_SECRET} backend redis://bob:other-pw@db:6379/2 done"

    assert mask_url(text) == (
        "broker redis://alice:****@cache.internal:6380/1 backend redis://bob:****@db:6379/2 done"
    )


def test_a_password_containing_an_at_sign_is_masked_whole() -> None:
    masked = mask_url("redis://alice:pa55@word@cache.internal:6379/0")

    assert "word" not in masked
    assert masked == "redis://alice:****@cache.internal:6379/0"


def test_the_log_filter_masks_a_url_logged_as_an_argument(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(MaskSecretsFilter())
    logger = logging.getLogger("tests.unit.config")

    with caplog.at_level(logging.INFO, logger="tests.unit.config"):
        logger.info("connecting to %s", URL_WITH_SECRET)
        logger.info("backend is %s too", URL_WITH_SECRET)

    assert HIDDEN not in caplog.text
    assert [r.getMessage() for r in caplog.records] == [
        "connecting to redis://alice:****@cache.internal:6380/1",
        "backend is redis://alice:****@cache.internal:6380/1 too",
    ]


def test_the_log_filter_leaves_other_records_untouched_and_never_drops_them() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("text",), None)

    assert MaskSecretsFilter().filter(record) is True
    assert record.msg == "plain %s"
    assert record.args == ("text",)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"redis://:{AWKWARD}@cache.internal:6379/0", "redis://:****@cache.internal:6379/0"),
        ("redis://user:p@ss/w:rd@cache.internal/0", "redis://user:****@cache.internal/0"),
        ("amqp://u:a/b?c@rabbit//", "amqp://u:****@rabbit//"),
        ("redis://alice:x:y/z@cache.internal:6379/0", "redis://alice:****@cache.internal:6379/0"),
        ("redis://alice:q?uery#frag@cache.internal/0", "redis://alice:****@cache.internal/0"),
    ],
    ids=["slash", "at-slash-colon", "slash-question", "colon-slash", "question-hash"],
)
def test_a_password_with_url_delimiters_is_masked_whole_and_user_and_host_stay(
    url: str, masked: str
) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=****"),
        (
            "redis://cache:6379/0?db=1&PASSWORD=s3cret&x=1",
            "redis://cache:6379/0?db=1&PASSWORD=****&x=1",
        ),
        ("amqp://rabbit//?pass=s3cret#top", "amqp://rabbit//?pass=****#top"),
        ("db+postgresql://db/app?Pwd=s3cret", "db+postgresql://db/app?Pwd=****"),
        ("connecting with redis_password=s3cret now", "connecting with redis_password=**** now"),
    ],
    ids=["password", "upper-case-among-others", "pass", "pwd", "in-a-log-line"],
)
def test_password_parameters_are_masked(text: str, masked: str) -> None:
    assert mask_url(text) == masked


def test_words_that_merely_end_in_pass_are_left_alone() -> None:
    assert mask_url("bypass=1 compass=north") == "bypass=1 compass=north"


# A guard, not a benchmark: this takes milliseconds; a backtracking pattern takes hours.
@pytest.mark.timeout(10)
def test_mask_url_stays_linear_on_a_megabyte_of_letters() -> None:
    text = "redis://" + "a" * 1_000_000

    assert mask_url(text) == text


def log_through_masking_handler(emit: Callable[[logging.Logger], None]) -> str:
    """What a handler with the filter writes for the records ``emit`` logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskSecretsFilter())
    logger = logging.getLogger("tests.unit.config.masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    return stream.getvalue()


def test_the_log_filter_masks_the_traceback_of_a_logged_exception() -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            raise redis.ConnectionError(f"Error connecting to redis://:{HIDDEN}@cache:6379/0")
        except redis.ConnectionError:
            logger.exception("the broker is gone")

    written = log_through_masking_handler(emit)

    assert "Traceback" in written
    assert "redis.exceptions.ConnectionError: Error connecting to redis://:****@cache" in written
    assert HIDDEN not in written


def test_the_log_filter_masks_a_traceback_another_formatter_already_cached() -> None:
    try:
        raise ValueError(f"bad URL redis://u:{AWKWARD}@cache/0")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    record.exc_text = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]

    MaskSecretsFilter().filter(record)

    assert record.exc_text is not None
    assert AWKWARD not in record.exc_text
    assert "redis://u:****@cache/0" in record.exc_text
    assert AWKWARD not in logging.Formatter().format(record)


def test_the_log_filter_masks_the_stack_info() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "here", None, None)
    record.stack_info = f"Stack (most recent call last):\n  connect('{URL_WITH_SECRET}')"

    MaskSecretsFilter().filter(record)

    assert HIDDEN not in record.stack_info
    assert "connect('redis://alice:****@cache.internal:6380/1')" in record.stack_info


def test_the_log_filter_keeps_a_record_whose_arguments_do_not_fit_its_format() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d apples", ("many",), None)

    assert MaskSecretsFilter().filter(record) is True
    assert record.args == ("many",)
