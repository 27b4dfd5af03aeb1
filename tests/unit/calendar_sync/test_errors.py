"""Feed errors carry the reason label the sync-errors metric documents, and say whether a
later attempt may succeed."""

from __future__ import annotations

import pytest

from personal_assistant.workers.calendar_sync.errors import (
    FEED_ERROR_REASONS,
    FeedConnectionError,
    FeedError,
    FeedHTTPError,
    FeedMalformed,
    FeedTimeout,
    FeedTooLarge,
)


def test_the_reasons_are_the_label_values_of_the_sync_errors_metric() -> None:
    assert sorted(FEED_ERROR_REASONS) == ["connection", "http", "malformed", "timeout", "too_large"]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (FeedTimeout("slow"), True),
        (FeedConnectionError("refused"), True),
        (FeedHTTPError("HTTP 502", 502), True),
        (FeedHTTPError("HTTP 408", 408), True),
        (FeedHTTPError("HTTP 403", 403), False),
        (FeedHTTPError("redirect loop", None), False),
        (FeedTooLarge("big"), False),
        (FeedMalformed("bad"), False),
    ],
)
def test_only_errors_that_may_pass_on_their_own_are_transient(
    error: FeedError, transient: bool
) -> None:
    assert error.transient is transient
