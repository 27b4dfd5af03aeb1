"""What can go wrong with one feed, and whether a later attempt can help.

Every error carries ``reason``, the label of ``pa_calendar_sync_errors`` (http, too_large,
malformed, connection, timeout), and ``transient``: a timeout, a lost connection, a 5xx, 408
or 429 may pass on their own; a 4xx, a feed over the size limit or a malformed feed will
not until someone changes it. Messages never hold a feed's URL (its path or query is often
a private token): they name the host at most.
"""

from __future__ import annotations

from typing import ClassVar

# HTTP replies a later attempt may not get: overload, rate limiting, a gateway's hiccup.
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429})


class FeedError(Exception):
    """A feed could not be synced; the events of its last good sync are kept."""

    #: The ``reason`` label of the sync-errors metric.
    reason: ClassVar[str] = "error"

    @property
    def transient(self) -> bool:
        """True when the same request may succeed later without anyone changing anything."""
        return False


class FeedHTTPError(FeedError):
    """The server answered with an error status (or a redirect that is not followed)."""

    reason = "http"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """5xx and the few 4xx that mean "not now" (408, 425, 429)."""
        return self.status is not None and (
            self.status >= 500 or self.status in TRANSIENT_HTTP_STATUSES
        )


class FeedTooLarge(FeedError):
    """The body is over CALENDAR_MAX_BYTES (declared or as it arrived): refused unread."""

    reason = "too_large"


class FeedMalformed(FeedError):
    """The body is not an iCalendar feed the store can hold (see parse.py)."""

    reason = "malformed"


class FeedTimeout(FeedError):
    """Connecting, a read, or the whole request took longer than CALENDAR_TIMEOUT."""

    reason = "timeout"

    @property
    def transient(self) -> bool:
        """Always: a slow server may be fast next time."""
        return True


class FeedConnectionError(FeedError):
    """No connection, or it broke mid-reply (refused, DNS, TLS, protocol error)."""

    reason = "connection"

    @property
    def transient(self) -> bool:
        """Always: networks and servers come back."""
        return True


FEED_ERROR_REASONS: tuple[str, ...] = tuple(
    cls.reason
    for cls in (FeedHTTPError, FeedTooLarge, FeedMalformed, FeedConnectionError, FeedTimeout)
)
"""Every ``reason`` a feed error can carry (the label values of the sync-errors metric)."""
