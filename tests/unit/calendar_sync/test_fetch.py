"""The conditional GET against a real HTTP server on loopback: validators, 304, size caps that
hold without reading the body, timeouts, error statuses, redirects; no URL in any error."""

from __future__ import annotations

import gzip
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest

from personal_assistant.workers.calendar_sync.errors import (
    FeedConnectionError,
    FeedError,
    FeedHTTPError,
    FeedMalformed,
    FeedTimeout,
    FeedTooLarge,
)
from personal_assistant.workers.calendar_sync.fetch import (
    MAX_REDIRECTS,
    FetchResult,
    feed_client,
    fetch_feed,
)
from tests.support.ics_feeds import FIRST_FEED, IcsFeedServer

# Feed URLs carry private tokens in their path: no error or log line may show one.
TOKEN = "private-9f3a1c"  # noqa: S105 - a made-up feed token, the string to look for
PATH = f"/calendars/{TOKEN}/basic.ics"
ETAG = '"v1"'
LAST_MODIFIED = "Mon, 05 Jan 2026 08:00:00 GMT"
LIMIT = 64 * 1024


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with feed_client(timeout=5.0) as made:
        yield made


def fetch(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = LIMIT,
    timeout: float = 5.0,
) -> FetchResult:
    return fetch_feed(
        client, url, etag=etag, last_modified=last_modified, max_bytes=max_bytes, timeout=timeout
    )


def failure(expected: type[FeedError], call: object) -> FeedError:
    """The FeedError a fetch raised, checked to keep the feed's token out of its message."""
    assert callable(call)
    with pytest.raises(expected) as caught:
        call()
    assert TOKEN not in str(caught.value)
    return caught.value


def test_a_first_fetch_sends_no_validators_and_returns_the_body_and_the_new_ones(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.feed(PATH, FIRST_FEED, etag=ETAG, last_modified=LAST_MODIFIED)

    result = fetch(client, feeds.url(PATH))

    assert result == FetchResult(False, FIRST_FEED, ETAG, LAST_MODIFIED)
    headers = feeds.seen(PATH)[0].headers
    assert "if-none-match" not in headers
    assert "if-modified-since" not in headers


def test_a_fetch_with_the_last_validators_gets_304_and_keeps_them(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.feed(PATH, FIRST_FEED, etag=ETAG, last_modified=LAST_MODIFIED)

    result = fetch(client, feeds.url(PATH), etag=ETAG, last_modified=LAST_MODIFIED)

    assert result == FetchResult(True, b"", ETAG, LAST_MODIFIED)
    headers = feeds.seen(PATH)[0].headers
    assert (headers["if-none-match"], headers["if-modified-since"]) == (ETAG, LAST_MODIFIED)


def test_a_feed_without_etag_is_revalidated_by_its_last_modified_date(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.feed(PATH, FIRST_FEED, last_modified=LAST_MODIFIED)

    assert fetch(client, feeds.url(PATH), last_modified=LAST_MODIFIED).not_modified


def test_a_changed_feed_answers_with_its_new_body_and_etag(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.feed(PATH, b"new body", etag='"v2"')

    result = fetch(client, feeds.url(PATH), etag=ETAG)

    assert (result.not_modified, result.body, result.etag) == (False, b"new body", '"v2"')


def test_a_validator_too_long_for_the_store_is_dropped_not_cut(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.feed(PATH, FIRST_FEED, etag='"' + "e" * 600 + '"')

    assert fetch(client, feeds.url(PATH)).etag is None


@pytest.mark.parametrize(
    ("status", "transient"), [(500, True), (503, True), (429, True), (404, False), (401, False)]
)
def test_an_error_status_is_an_http_error_transient_only_when_it_may_pass(
    feeds: IcsFeedServer, client: httpx.Client, status: int, transient: bool
) -> None:
    feeds.status(PATH, status)

    error = failure(FeedHTTPError, lambda: fetch(client, feeds.url(PATH)))

    assert str(error) == f"{feeds.base_url}/**** answered HTTP {status}"
    assert (error.reason, error.transient) == ("http", transient)


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.endless(PATH, framing="length")

    error = failure(FeedTooLarge, lambda: fetch(client, feeds.url(PATH)))

    assert f"Content-Length {1 << 40} is over the limit of {LIMIT} bytes" in str(error)
    assert (error.reason, error.transient) == ("too_large", False)


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_an_endless_body_is_given_up_as_soon_as_it_passes_the_limit(
    feeds: IcsFeedServer, client: httpx.Client, framing: str
) -> None:
    feeds.endless(PATH, framing=framing)

    error = failure(FeedTooLarge, lambda: fetch(client, feeds.url(PATH)))

    assert "over the limit" in str(error)
    # The server wrote what the socket buffers took, far from the half gigabyte it would
    # have written to a client that reads on.
    assert feeds.sent[PATH] < 64 * 1024 * 1024


def test_a_gzip_body_is_decoded(feeds: IcsFeedServer, client: httpx.Client) -> None:
    feeds.feed(PATH, FIRST_FEED, gzipped=True)

    assert fetch(client, feeds.url(PATH)).body == FIRST_FEED
    assert feeds.seen(PATH)[0].headers["accept-encoding"] == "gzip, deflate"


def test_a_small_gzip_body_that_expands_past_the_limit_is_refused(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))  # 16 MB in about 16 KB on the wire
    feeds.raw(PATH, bomb, {"Content-Encoding": "gzip"})

    failure(FeedTooLarge, lambda: fetch(client, feeds.url(PATH), max_bytes=1024 * 1024))


@pytest.mark.parametrize(
    ("payload", "encoding", "message"),
    [
        (b"not gzip at all", "gzip", "the compressed body is corrupt"),
        (gzip.compress(FIRST_FEED)[:100], "gzip", "ends before its end marker"),
        (FIRST_FEED, "br", "unsupported Content-Encoding 'br'"),
    ],
    ids=["corrupt", "truncated", "unsupported"],
)
def test_a_body_that_does_not_decode_is_malformed(
    feeds: IcsFeedServer, client: httpx.Client, payload: bytes, encoding: str, message: str
) -> None:
    feeds.raw(PATH, payload, {"Content-Encoding": encoding})

    error = failure(FeedMalformed, lambda: fetch(client, feeds.url(PATH)))

    assert message in str(error)


def test_a_server_that_does_not_answer_in_time_is_a_timeout(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.late(PATH, delay=30)

    error = failure(FeedTimeout, lambda: fetch(client, feeds.url(PATH), timeout=0.3))

    assert str(error) == f"{feeds.base_url}/****: no reply within 0.3 s (read)"
    assert (error.reason, error.transient) == ("timeout", True)


def test_a_server_that_trickles_is_cut_off_at_the_whole_request_deadline(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.trickle(PATH, interval=0.05)  # each read is quick; the reply never ends

    error = failure(FeedTimeout, lambda: fetch(client, feeds.url(PATH), timeout=0.5))

    assert "whole-request deadline" in str(error)


def test_a_refused_connection_is_a_transient_connection_error(client: httpx.Client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed at once: nothing listens there

    error = failure(
        FeedConnectionError, lambda: fetch(client, f"http://127.0.0.1:{port}/{TOKEN}.ics")
    )

    assert str(error).startswith(f"http://127.0.0.1:{port}/****: ConnectError")
    assert (error.reason, error.transient) == ("connection", True)


def test_a_redirect_is_followed_with_the_validators(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.redirect(PATH, "/moved.ics", status=301)
    feeds.feed("/moved.ics", FIRST_FEED, etag=ETAG)

    assert fetch(client, feeds.url(PATH), etag=ETAG).not_modified
    assert feeds.seen("/moved.ics")[0].headers["if-none-match"] == ETAG


def test_a_redirect_loop_ends_after_the_maximum_number_of_redirects(
    feeds: IcsFeedServer, client: httpx.Client
) -> None:
    feeds.redirect(PATH, PATH)

    error = failure(FeedHTTPError, lambda: fetch(client, feeds.url(PATH)))

    assert f"more than {MAX_REDIRECTS} redirects" in str(error)
    assert len(feeds.seen(PATH)) == MAX_REDIRECTS + 1


@pytest.mark.parametrize(
    ("start", "location", "message"),
    [
        ("https://cal.example/a.ics", "http://cal.example/a.ics", "from https to plain http"),
        ("http://cal.example/a.ics", "file:///etc/passwd", "a file URL: only http"),
        ("http://cal.example/a.ics", "http://[::1", "redirected to an invalid URL"),
    ],
    ids=["downgrade", "file", "invalid"],
)
def test_a_redirect_to_plain_http_another_scheme_or_nowhere_is_not_followed(
    start: str, location: str, message: str
) -> None:
    # A mock transport: the decision is the code's, and a loopback TLS server would add
    # nothing but certificates.
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": location})

    with (
        httpx.Client(transport=httpx.MockTransport(answer)) as mock,
        pytest.raises(FeedHTTPError, match=message) as caught,
    ):
        fetch(mock, start)

    assert caught.value.transient is False


def test_the_request_log_line_of_httpx_shows_the_host_but_not_the_path(
    feeds: IcsFeedServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    feeds.feed(PATH, FIRST_FEED)

    with caplog.at_level(logging.INFO, logger="httpx"):
        fetch(client, feeds.url(PATH))

    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines == [f'HTTP Request: GET {feeds.base_url}/**** "HTTP/1.1 200 OK"']
