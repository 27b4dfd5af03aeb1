"""A loopback HTTP server of iCalendar feeds, and feed bodies to serve.

:class:`IcsFeedServer` serves a reply per path, set (and changed) by the test: a feed with an
ETag and Last-Modified that answers 304 to a matching ``If-None-Match`` / ``If-Modified-Since``,
an error status, a redirect, a gzip body, an endless body (with a huge Content-Length, chunked,
or delimited by closing the connection), a reply that starts late, and one that trickles. It
records every request's headers, and how many bytes each endless reply got out before the
client gave up.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# An endless reply stops here even if the client never does (a bug then fails its test on
# the assertion, not by filling the disk or the memory of the machine).
ENDLESS_CAP_BYTES = 512 * 1024 * 1024
ENDLESS_CHUNK = b"X" * 65536

Reply = Callable[["_Handler"], None]


@dataclass
class SeenRequest:
    """One request the server got: its path and headers (names in lower case)."""

    path: str
    headers: dict[str, str]


@dataclass
class IcsFeedServer:
    """Feeds on 127.0.0.1, one reply per path (see the module doc); stop with :meth:`close`."""

    requests: list[SeenRequest] = field(default_factory=list)
    #: Bytes of body each endless path wrote before the client hung up.
    sent: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._replies: dict[str, Reply] = {}
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._httpd.feeds = self  # type: ignore[attr-defined]
        # A short poll: close() (shutdown) waits up to one interval for the loop to notice.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        """The URL of ``path`` (which starts with '/')."""
        return self.base_url + path

    def close(self) -> None:
        """Stop serving; replies still sleeping or streaming end at once."""
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def seen(self, path: str) -> list[SeenRequest]:
        """The requests of ``path``, oldest first."""
        return [r for r in self.requests if r.path == path]

    # -- replies ------------------------------------------------------------------------------
    def feed(
        self,
        path: str,
        body: bytes,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        gzipped: bool = False,
    ) -> None:
        """A feed: ``body`` with these validators, 304 to a request that matches them."""

        def reply(handler: _Handler) -> None:
            match_etag = etag is not None and handler.headers.get("If-None-Match") == etag
            match_date = (
                etag is None
                and last_modified is not None
                and handler.headers.get("If-Modified-Since") == last_modified
            )
            headers = {"ETag": etag, "Last-Modified": last_modified}
            if match_etag or match_date:
                handler.reply(304, b"", headers)
                return
            payload = gzip.compress(body) if gzipped else body
            encoding = {"Content-Encoding": "gzip"} if gzipped else {}
            handler.reply(200, payload, {**headers, **encoding})

        self._replies[path] = reply

    def status(self, path: str, status: int, body: bytes = b"error\n") -> None:
        """An error reply: ``status`` with a short body."""
        self._replies[path] = lambda handler: handler.reply(status, body, {})

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """A redirect to ``location``."""
        self._replies[path] = lambda handler: handler.reply(status, b"", {"Location": location})

    def raw(self, path: str, payload: bytes, headers: dict[str, str]) -> None:
        """``payload`` as it is, with these headers (for encodings and lies about them)."""
        self._replies[path] = lambda handler: handler.reply(200, payload, headers)

    def endless(self, path: str, *, framing: str) -> None:
        """A body that never ends: ``framing`` is "length" (a Content-Length of 1 TB),
        "chunked", or "close" (no length: the body ends when the connection does)."""

        def reply(handler: _Handler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/calendar")
            if framing == "length":
                handler.send_header("Content-Length", str(1 << 40))
            elif framing == "chunked":
                handler.send_header("Transfer-Encoding", "chunked")
            handler.send_header("Connection", "close")
            handler.end_headers()
            self.sent[path] = 0
            try:
                while self.sent[path] < ENDLESS_CAP_BYTES and not self._closing.is_set():
                    chunk = ENDLESS_CHUNK
                    if framing == "chunked":
                        chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
                    handler.wfile.write(chunk)
                    self.sent[path] += len(ENDLESS_CHUNK)
            except OSError:
                pass  # the client hung up: what the test wants to see
            handler.close_connection = True

        self._replies[path] = reply

    def late(self, path: str, delay: float, body: bytes = b"") -> None:
        """A reply whose status line comes only after ``delay`` seconds."""

        def reply(handler: _Handler) -> None:
            if not self._closing.wait(delay):
                handler.reply(200, body, {})

        self._replies[path] = reply

    def trickle(self, path: str, interval: float) -> None:
        """Headers at once, then one small piece of body every ``interval``, forever."""

        def reply(handler: _Handler) -> None:
            handler.send_response(200)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.send_header("Connection", "close")
            handler.end_headers()
            try:
                while not self._closing.wait(interval):
                    handler.wfile.write(b"2\r\nX\n\r\n")
                    handler.wfile.flush()
            except OSError:
                pass
            handler.close_connection = True

        self._replies[path] = reply

    def _reply_for(self, path: str) -> Reply:
        return self._replies.get(path, lambda handler: handler.reply(404, b"no such feed\n", {}))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        feeds: IcsFeedServer = self.server.feeds  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        feeds.requests.append(SeenRequest(path, {k.lower(): v for k, v in self.headers.items()}))
        feeds._reply_for(path)(self)

    def reply(self, status: int, body: bytes, headers: Mapping[str, str | None]) -> None:
        """A whole reply with a Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", "text/calendar; charset=utf-8")
        for name, value in headers.items():
            if value is not None:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are recorded, not printed."""


@contextmanager
def ics_feed_server() -> Iterator[IcsFeedServer]:
    """An :class:`IcsFeedServer`, closed at the end of the block."""
    server = IcsFeedServer()
    try:
        yield server
    finally:
        server.close()


# --- bodies --------------------------------------------------------------------------------

CALENDAR_HEAD = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//personal-assistant tests//EN\r\n"
CALENDAR_TAIL = "END:VCALENDAR\r\n"

BERLIN = (
    "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\n"
    "BEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n"
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
    "BEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n"
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n"
    "END:VTIMEZONE\r\n"
)


def vevent(uid: str, *lines: str) -> str:
    """A VEVENT with ``uid`` and the given content lines (``"DTSTART:20260105T090000Z"``)."""
    return (
        "BEGIN:VEVENT\r\n"
        + f"UID:{uid}\r\n"
        + "".join(f"{line}\r\n" for line in lines)
        + ("END:VEVENT\r\n")
    )


def calendar(*components: str) -> bytes:
    """A VCALENDAR holding ``components`` (VTIMEZONEs, VEVENTs), as a feed serves it."""
    return (CALENDAR_HEAD + "".join(components) + CALENDAR_TAIL).encode()


# A weekly meeting in Berlin time with its second occurrence moved (an exception), a one-off
# meeting and an all-day event: what the sync tests store first.
WEEKLY = vevent(
    "weekly@example.com",
    "SUMMARY:Weekly sync",
    "DTSTART;TZID=Europe/Berlin:20260105T090000",
    "DTEND;TZID=Europe/Berlin:20260105T093000",
    "RRULE:FREQ=WEEKLY;COUNT=10",
)
WEEKLY_MOVED = vevent(
    "weekly@example.com",
    "SUMMARY:Weekly sync (moved)",
    "RECURRENCE-ID;TZID=Europe/Berlin:20260112T090000",
    "DTSTART;TZID=Europe/Berlin:20260112T110000",
    "DTEND;TZID=Europe/Berlin:20260112T113000",
    "SEQUENCE:1",
)
DENTIST = vevent(
    "dentist@example.com",
    "SUMMARY:Dentist",
    "LOCATION:Main St 1",
    "DTSTART:20260107T140000Z",
    "DTEND:20260107T150000Z",
)
HOLIDAY = vevent(
    "holiday@example.com", "SUMMARY:Holiday", "DTSTART;VALUE=DATE:20260106", "TRANSP:TRANSPARENT"
)
FIRST_FEED = calendar(BERLIN, WEEKLY, WEEKLY_MOVED, DENTIST, HOLIDAY)
# The same feed a day later: the dentist is gone, the holiday renamed.
HOLIDAY_RENAMED = HOLIDAY.replace("SUMMARY:Holiday", "SUMMARY:Epiphany")
SECOND_FEED = calendar(BERLIN, WEEKLY, WEEKLY_MOVED, HOLIDAY_RENAMED)
# Not an iCalendar feed (what a login page or a half-written file looks like to the parser).
MALFORMED_FEED = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nthis is not a content line\r\n"
