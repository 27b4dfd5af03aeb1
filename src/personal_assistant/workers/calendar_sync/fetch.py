"""One feed's conditional GET: validators out, a body (or "not modified") back, within limits.

- Conditional: ``If-None-Match`` / ``If-Modified-Since`` from the last good sync; a 304 costs
  one small reply, which is what an hourly sync of a quiet calendar mostly gets.
- Bounded in size: a ``Content-Length`` over the cap is refused before the body is read, and
  the body is streamed and given up as soon as it passes the cap, compressed or not (gzip and
  deflate are decoded here with an output limit, so a small "zip bomb" cannot expand in memory).
- Bounded in time: connect, each read and the pool wait each have CALENDAR_TIMEOUT, and the
  whole request too (checked between chunks, so a server trickling a byte at a time is cut
  off after about that long, at most one read timeout later).
- Redirects are followed by hand, at most MAX_REDIRECTS, to http(s) only and never from https
  down to http.

A feed's URL often carries a private token in its path or query: errors name the host only
(``mask_endpoint``), and :func:`feed_client` keeps httpx's own request log line from printing
the full URL.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import httpx

from personal_assistant.workers.calendar_sync.errors import (
    FeedConnectionError,
    FeedHTTPError,
    FeedMalformed,
    FeedTimeout,
    FeedTooLarge,
)
from personal_assistant.workers.config.masking import mask_endpoint, mask_httpx_request_urls

# A feed moved once or twice (a renamed calendar, http -> https) is normal; a longer chain is
# a loop or a misconfiguration, and each hop is another request against the deadline.
MAX_REDIRECTS = 5
# The longest validators kept: the store's columns (calendar_feeds.etag, .last_modified).
# A longer one is dropped (the next request is unconditional), never truncated (it would
# never match).
ETAG_MAX_CHARS = 512
LAST_MODIFIED_MAX_CHARS = 64
# What the client asks for: the codings decoded here with a size limit, nothing else.
ACCEPT_ENCODING = "gzip, deflate"
USER_AGENT = "personal-assistant-workers calendar-sync"
# What a timeout's error says ran out.
_TIMEOUT_PHASES: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "waiting for a connection",
}
# zlib window bits that accept a zlib or a gzip header alike (servers mix up "deflate").
_ZLIB_OR_GZIP = zlib.MAX_WBITS | 32


@dataclass(frozen=True)
class FetchResult:
    """A feed's reply: its body, or ``not_modified``; and the validators for the next GET."""

    not_modified: bool
    body: bytes
    etag: str | None
    last_modified: str | None


def feed_client(timeout: float) -> httpx.Client:
    """The HTTP client of one sync run: per-phase timeouts, no automatic redirects."""
    mask_httpx_request_urls()
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept": "text/calendar, */*;q=0.5"},
    )


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """The request's validators: If-None-Match and If-Modified-Since when known."""
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def fetch_feed(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None,
    last_modified: str | None,
    max_bytes: int,
    timeout: float,
) -> FetchResult:
    """GET ``url`` conditionally; raise a FeedError subclass for anything but 2xx or 304."""
    deadline = time.monotonic() + timeout
    headers = {**conditional_headers(etag, last_modified), "Accept-Encoding": ACCEPT_ENCODING}
    try:
        current = httpx.URL(url)
    except httpx.InvalidURL:
        raise FeedHTTPError(f"{mask_endpoint(url)}: not a valid URL", None) from None
    for _hop in range(MAX_REDIRECTS + 1):
        where = mask_endpoint(str(current))
        try:
            with client.stream("GET", current, headers=headers, timeout=timeout) as response:
                if response.has_redirect_location:
                    current = _redirect_target(current, response)
                    continue
                if response.status_code == httpx.codes.NOT_MODIFIED:
                    return FetchResult(
                        not_modified=True,
                        body=b"",
                        etag=_validator(response, "etag", ETAG_MAX_CHARS) or etag,
                        last_modified=(
                            _validator(response, "last-modified", LAST_MODIFIED_MAX_CHARS)
                            or last_modified
                        ),
                    )
                if not response.is_success:
                    raise FeedHTTPError(
                        f"{where} answered HTTP {response.status_code}", response.status_code
                    )
                body = _read_body(response, max_bytes=max_bytes, deadline=deadline, where=where)
                return FetchResult(
                    not_modified=False,
                    body=body,
                    etag=_validator(response, "etag", ETAG_MAX_CHARS),
                    last_modified=_validator(response, "last-modified", LAST_MODIFIED_MAX_CHARS),
                )
        except httpx.TimeoutException as exc:
            phase = _TIMEOUT_PHASES.get(type(exc), "request")
            raise FeedTimeout(f"{where}: no reply within {timeout:g} s ({phase})") from None
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.RemoteProtocolError) and "location header" in str(exc):
                # httpx prepares the next request of a redirect even when not following it.
                raise FeedHTTPError(f"{where} redirected to an invalid URL", None) from None
            detail = _scrubbed(str(exc), str(current)) or "no detail"
            raise FeedConnectionError(f"{where}: {type(exc).__name__}: {detail}") from None
    raise FeedHTTPError(f"{mask_endpoint(url)}: more than {MAX_REDIRECTS} redirects", None)


def _redirect_target(current: httpx.URL, response: httpx.Response) -> httpx.URL:
    """Where a 3xx points, if it may be followed (http(s), no downgrade from https)."""
    where = mask_endpoint(str(current))
    try:
        target = current.join(response.headers["location"])
    except httpx.InvalidURL:
        raise FeedHTTPError(f"{where} redirected to an invalid URL", response.status_code) from None
    if target.scheme not in ("http", "https"):
        raise FeedHTTPError(
            f"{where} redirected to a {target.scheme or 'schemeless'} URL: only http(s) is "
            "followed",
            response.status_code,
        )
    if current.scheme == "https" and target.scheme == "http":
        raise FeedHTTPError(
            f"{where} redirected from https to plain http: refused (the feed would travel in "
            "clear text)",
            response.status_code,
        )
    return target


def _validator(response: httpx.Response, name: str, limit: int) -> str | None:
    """A validator header worth sending back: printable ASCII of at most ``limit`` chars."""
    value = str(response.headers.get(name, ""))
    if not value or len(value) > limit or not value.isascii() or not value.isprintable():
        return None
    return value


def _read_body(response: httpx.Response, *, max_bytes: int, deadline: float, where: str) -> bytes:
    """The decoded body, refused as soon as it is known to exceed ``max_bytes``."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FeedTooLarge(
            f"{where}: Content-Length {int(declared)} is over the limit of {max_bytes} bytes "
            "(CALENDAR_MAX_BYTES)"
        )
    body = _LimitedBody(_content_decoder(response, where), max_bytes, where)
    for chunk in response.iter_raw():
        body.add(chunk)
        if time.monotonic() > deadline:
            raise FeedTimeout(f"{where}: the reply took longer than the whole-request deadline")
    return body.finish()


def _content_decoder(response: httpx.Response, where: str) -> zlib._Decompress | None:
    """A decompressor for the reply's Content-Encoding (None: the body is as sent)."""
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(_ZLIB_OR_GZIP)
    raise FeedMalformed(f"{where}: unsupported Content-Encoding {coding[:40]!r}")


class _LimitedBody:
    """The body as it arrives, decoded, never more than ``max_bytes`` + 1 bytes of it."""

    def __init__(self, decoder: zlib._Decompress | None, max_bytes: int, where: str) -> None:
        self._decoder = decoder
        self._max_bytes = max_bytes
        self._where = where
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, raw: bytes) -> None:
        """Append a raw chunk; FeedTooLarge as soon as the decoded body passes the limit."""
        if self._decoder is None:
            self._append(raw)
            return
        pending = raw
        while pending:
            try:
                # max_length: at most one byte past the limit comes out of any chunk.
                out = self._decoder.decompress(pending, self._max_bytes - self._size + 1)
            except zlib.error as exc:
                raise FeedMalformed(
                    f"{self._where}: the compressed body is corrupt ({exc})"
                ) from None
            self._append(out)
            pending = self._decoder.unconsumed_tail

    def finish(self) -> bytes:
        """The whole decoded body (FeedMalformed if a compressed one stopped short)."""
        if self._decoder is not None and not self._decoder.eof:
            raise FeedMalformed(f"{self._where}: the compressed body ends before its end marker")
        return b"".join(self._parts)

    def _append(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_bytes:
            raise FeedTooLarge(
                f"{self._where}: the body is over the limit of {self._max_bytes} bytes "
                "(CALENDAR_MAX_BYTES); stopped reading"
            )
        self._parts.append(data)


def _scrubbed(text: str, url: str) -> str:
    """``text`` without ``url`` (an exception's message may quote it), cut to one short line."""
    text = text.replace(url, mask_endpoint(url)).replace("\n", " ")
    return text[:200]
