"""Alert channels and their dispatcher, against real servers on loopback.

HTTP receivers are ``http.server`` instances, the SMTP receiver is aiosmtpd; a "dead" endpoint is
a socket that accepts connections and never answers (the worst case: the sender waits for its
whole timeout), or a port nobody listens on.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.channels.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Channel,
    ChannelDispatcher,
    ChannelError,
    EmailChannel,
    LogChannel,
    Notification,
    SlackChannel,
    WebhookChannel,
    mask_endpoint,
    verify_signature,
)
from tests.support.alert_servers import LoopbackSMTP, Mailbox
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

SECRET = "unit-test-webhook-secret-0123456789abcdef"  # noqa: S105 - a test secret (41 bytes)
SLACK_HOOK_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
DEAD_TIMEOUT = 3.0  # how long a send to the black hole takes before it gives up


def note(
    rule: str = "CeleryWorkerDown",
    state: str = "firing",
    fingerprint: str = "fp-1",
    **extra: Any,
) -> Notification:
    return Notification(
        rule=rule,
        state=state,
        severity=extra.pop("severity", "critical"),
        message=extra.pop("message", "worker w1 stopped sending heartbeats"),
        labels=extra.pop("labels", {"hostname": "w1"}),
        fields=extra.pop("fields", {"down_for_s": 125.5}),
        fingerprint=fingerprint,
        timestamp=extra.pop("timestamp", 1_700_000_000.0),
    )


# --- Loopback servers -----------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived


class HttpReceiver:
    """A real HTTP server on 127.0.0.1 that records POSTs and answers ``status``."""

    def __init__(self, status: int = 200, reply: bytes = b"ok") -> None:
        self.status = status
        self.reply = reply
        self.location = ""
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._cond:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    receiver._cond.notify_all()
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} of {count} requests in {timeout}s")
            return list(self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


class BlackHole:
    """Accepts TCP connections (the kernel's backlog does) and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    yield server
    server.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def smtp_server() -> Iterator[tuple[LoopbackSMTP, Mailbox]]:
    handler = Mailbox()
    controller = LoopbackSMTP(handler)
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.fixture
def dispatchers() -> Iterator[list[ChannelDispatcher]]:
    """Dispatchers made by a test, closed at its end."""
    made: list[ChannelDispatcher] = []
    yield made
    for dispatcher in made:
        dispatcher.close(timeout=DEAD_TIMEOUT + 2)


class Counter:
    """failure_counter that records its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, channel: str) -> None:
        with self._lock:
            self.calls.append(channel)


class ScriptedChannel:
    """A channel failing ``fail_times`` times (then succeeding), recording every attempt."""

    def __init__(
        self,
        name: str = "scripted",
        fail_times: int = 0,
        error: Exception | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.fail_times = fail_times
        self.error = error or ChannelError("boom")
        self.gate = gate
        self.attempts: list[tuple[str, float]] = []
        self.delivered: list[Notification] = []
        self._lock = threading.Lock()

    def send(self, n: Notification) -> None:
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        with self._lock:
            self.attempts.append((n.fingerprint, time.monotonic()))
            if len(self.attempts) <= self.fail_times:
                raise self.error
            self.delivered.append(n)


# --- Notification ---------------------------------------------------------------------------


def test_notification_to_json_is_json_and_complete() -> None:
    n = note(fields={"when": time, "count": 3})
    data = n.to_json()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {
        "rule",
        "state",
        "severity",
        "message",
        "labels",
        "fields",
        "fingerprint",
        "timestamp",
    }
    assert data["fields"]["count"] == 3
    assert isinstance(data["fields"]["when"], str)  # not JSON: turned into its str
    assert n.title == "[CRITICAL] CeleryWorkerDown: firing"


def test_notification_json_is_strict_json() -> None:
    n = note(fields={"p95": float("nan"), "nested": {"inf": float("inf"), "ids": (1, 2)}})
    data = n.to_json()
    assert data["fields"] == {"p95": "nan", "nested": {"inf": "inf", "ids": [1, 2]}}
    body = WebhookChannel("https://hooks.example.org/x", SECRET).body(n)

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    assert json.loads(body, parse_constant=refuse) == data


def test_notification_rejects_unknown_state() -> None:
    with pytest.raises(ValueError, match="firing"):
        note(state="pending")


def test_a_notification_message_over_the_cap_is_cut_with_a_marker() -> None:
    n = note(message="RESOLVED: " + "x" * (5 * c.ALERT_MESSAGE_MAX_CHARS))
    assert len(n.message) == c.ALERT_MESSAGE_MAX_CHARS
    assert n.message.startswith("RESOLVED: xxx")
    assert n.message.endswith(f"[message cut at {c.ALERT_MESSAGE_MAX_CHARS} characters]")


def test_channels_satisfy_the_protocol(http_receiver: HttpReceiver) -> None:
    channels: list[Channel] = [
        LogChannel(),
        EmailChannel("127.0.0.1", 25, "a@example.org", ["b@example.org"]),
        SlackChannel(http_receiver.url),
        WebhookChannel(http_receiver.url, SECRET),
    ]
    assert all(isinstance(c, Channel) for c in channels)
    assert [c.name for c in channels] == ["log", "email", "slack", "webhook"]


# --- LogChannel -----------------------------------------------------------------------------


def test_log_channel_logs_at_the_severity(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="personal_assistant.workers.alerts")
    LogChannel().send(note())
    LogChannel().send(note(state="resolved"))
    first, second = caplog.records
    assert first.levelno == logging.CRITICAL
    assert "[CRITICAL] CeleryWorkerDown: firing" in first.getMessage()
    assert '"hostname": "w1"' in first.getMessage()
    assert second.levelno == logging.INFO


# --- WebhookChannel -------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "   "])
def test_webhook_refuses_an_empty_secret(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookChannel("https://hooks.example.org/alerts", secret)


@pytest.mark.parametrize("secret", ["Q", "Q" * (c.WEBHOOK_MIN_SECRET_BYTES - 1), "é" * 15])
def test_webhook_refuses_a_secret_shorter_than_the_minimum(secret: str) -> None:
    with pytest.raises(ValueError, match=f"at least {c.WEBHOOK_MIN_SECRET_BYTES} bytes") as err:
        WebhookChannel("https://hooks.example.org/alerts", secret)
    assert secret not in str(err.value)


@pytest.mark.parametrize(
    "url", ["ftp://example.org/x", "file:///etc/passwd", "https:///nohost", "http://a b/c", ""]
)
def test_webhook_refuses_urls_it_cannot_post_to(url: str) -> None:
    with pytest.raises(ValueError, match="webhook"):
        WebhookChannel(url, SECRET)


@pytest.mark.parametrize(
    "url", ["http://hooks.example.org/alerts", "http://10.0.0.5:8080/x", "http://127.example/x"]
)
@pytest.mark.parametrize("channel", ["webhook", "slack"])
def test_plain_http_to_a_remote_host_is_refused(url: str, channel: str) -> None:
    with pytest.raises(ValueError, match="must be https") as err:
        if channel == "slack":
            SlackChannel(url)
        else:
            WebhookChannel(url, SECRET)
    assert "/alerts" not in str(err.value)  # the path may hold a token: masked


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://127.1.2.3/x", "http://[::1]:9/x", "http://localhost/x"]
)
def test_plain_http_to_loopback_is_accepted_for_tests(url: str) -> None:
    assert SlackChannel(url).endpoint.startswith("http://")
    assert WebhookChannel(url, SECRET).endpoint.startswith("http://")


def test_webhook_signature_is_hmac_sha256_of_the_timestamp_and_the_exact_body(
    http_receiver: HttpReceiver,
) -> None:
    n = note()
    before = int(time.time())
    WebhookChannel(http_receiver.url + "/alerts?team=ops", SECRET).send(n)
    (request,) = http_receiver.wait_for(1)

    assert request.path == "/alerts?team=ops"
    assert request.headers["Content-Type"] == "application/json"
    stamp = request.headers[TIMESTAMP_HEADER]
    assert before <= int(stamp) <= int(time.time())
    signed = stamp.encode() + b"." + request.body
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert json.loads(request.body) == n.to_json()
    signature = request.headers[SIGNATURE_HEADER]
    assert verify_signature(request.body, signature, SECRET, stamp)
    assert not verify_signature(request.body, signature, "wrong" * 8, stamp)
    assert not verify_signature(request.body + b" ", signature, SECRET, stamp)
    assert not verify_signature(request.body, None, SECRET, stamp)


def signed_request(at: int) -> tuple[bytes, str, str]:
    """(body, signature, timestamp) of a webhook request signed at ``at``."""
    channel = WebhookChannel("https://hooks.example.org/alerts", SECRET)
    body = channel.body(note())
    return body, channel.sign(body, at), str(at)


def test_a_captured_request_replayed_after_the_window_is_refused() -> None:
    body, signature, stamp = signed_request(1_700_000_000)
    sent = 1_700_000_000
    assert verify_signature(body, signature, SECRET, stamp, now=sent + c.WEBHOOK_MAX_AGE_S)
    later = sent + c.WEBHOOK_MAX_AGE_S + 1
    assert not verify_signature(body, signature, SECRET, stamp, now=later)


def test_a_timestamp_far_in_the_future_is_refused() -> None:
    now = 1_700_000_000
    body, signature, stamp = signed_request(now + c.WEBHOOK_MAX_AGE_S + 1)
    assert not verify_signature(body, signature, SECRET, stamp, now=now)
    body, signature, stamp = signed_request(now + 10)  # a clock a little ahead is fine
    assert verify_signature(body, signature, SECRET, stamp, now=now)


def test_a_replay_with_a_fresh_timestamp_fails_because_the_timestamp_is_signed() -> None:
    body, signature, _ = signed_request(1_700_000_000)
    later = 1_700_000_000 + 3600
    assert not verify_signature(body, signature, SECRET, str(later), now=later)


def test_the_default_clock_is_the_receivers() -> None:
    body, signature, stamp = signed_request(int(time.time()))
    assert verify_signature(body, signature, SECRET, stamp)
    body, signature, stamp = signed_request(int(time.time()) - c.WEBHOOK_MAX_AGE_S - 60)
    assert not verify_signature(body, signature, SECRET, stamp)


NOW = 1_700_000_000
# (what, how a well-formed (signature, timestamp) pair is spoiled: -> signature, timestamp, secret)
Spoil = Callable[[str, str], tuple[Any, Any, Any]]
MALFORMED: list[tuple[str, Spoil]] = [
    ("non-ASCII signature", lambda sig, ts: ("sha256=" + "é" * 64, ts, SECRET)),
    ("non-ASCII signature bytes", lambda sig, ts: (("sha256=" + "é" * 32).encode(), ts, SECRET)),
    ("wrong prefix", lambda sig, ts: (sig.replace("sha256=", "sha1="), ts, SECRET)),
    ("no prefix", lambda sig, ts: (sig.removeprefix("sha256="), ts, SECRET)),
    ("too short", lambda sig, ts: (sig[:-2], ts, SECRET)),
    ("too long", lambda sig, ts: (sig + "00", ts, SECRET)),
    ("not hex", lambda sig, ts: (sig[:-1] + "z", ts, SECRET)),
    ("missing signature", lambda sig, ts: (None, ts, SECRET)),
    ("empty signature", lambda sig, ts: ("", ts, SECRET)),
    ("signature not text", lambda sig, ts: (12345, ts, SECRET)),
    ("missing timestamp", lambda sig, ts: (sig, None, SECRET)),
    ("empty timestamp", lambda sig, ts: (sig, "", SECRET)),
    ("timestamp with a fraction", lambda sig, ts: (sig, ts + ".5", SECRET)),
    ("negative timestamp", lambda sig, ts: (sig, "-" + ts, SECRET)),
    ("timestamp in other digits", lambda sig, ts: (sig, "\u0661\u0667" + "\u0660" * 8, SECRET)),
    ("5,000-digit timestamp", lambda sig, ts: (sig, "9" * 5000, SECRET)),
    ("empty secret", lambda sig, ts: (sig, ts, "")),
    ("secret not text", lambda sig, ts: (sig, ts, None)),
    ("secret with a lone surrogate", lambda sig, ts: (sig, ts, "\ud800" * 40)),
]


@pytest.mark.parametrize("spoil", [case[1] for case in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_verify_signature_returns_false_on_malformed_input(spoil: Spoil) -> None:
    body, signature, stamp = signed_request(NOW)
    assert verify_signature(body, signature, SECRET, stamp, now=NOW)
    header, timestamp, secret = spoil(signature, stamp)
    assert verify_signature(body, header, secret, timestamp, now=NOW) is False


def test_verify_signature_accepts_bytes_headers_and_upper_case_hex() -> None:
    body, signature, stamp = signed_request(NOW)
    upper = "sha256=" + signature.removeprefix("sha256=").upper()
    assert verify_signature(body, upper.encode(), SECRET, stamp.encode(), now=NOW)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=64),
    signature=st.one_of(st.none(), st.text(max_size=80), st.binary(max_size=80)),
    stamp=st.one_of(st.none(), st.text(max_size=20), st.binary(max_size=20), st.integers()),
    secret=st.one_of(st.text(max_size=40), st.binary(max_size=40)),
)
def test_verify_signature_never_raises(
    body: bytes, signature: Any, stamp: Any, secret: Any
) -> None:
    assert verify_signature(body, signature, secret, stamp, now=NOW) in (True, False)


def test_webhook_repr_and_errors_hide_secret_and_url(http_receiver: HttpReceiver) -> None:
    http_receiver.status, http_receiver.reply = 500, b"internal error"
    channel = WebhookChannel(http_receiver.url + "/hook/tok3n-in-path", SECRET)
    assert SECRET not in repr(channel)
    assert "tok3n" not in repr(channel)
    with pytest.raises(ChannelError) as caught:
        channel.send(note())
    assert caught.value.retryable
    assert "HTTP 500" in str(caught.value)
    assert "tok3n" not in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (400, False), (429, True)])
def test_http_client_errors_are_not_retried_except_throttling(
    http_receiver: HttpReceiver, status: int, retryable: bool
) -> None:
    http_receiver.status = status
    with pytest.raises(ChannelError) as caught:
        WebhookChannel(http_receiver.url, SECRET).send(note())
    assert caught.value.retryable is retryable


def test_redirects_are_not_followed(http_receiver: HttpReceiver) -> None:
    other = HttpReceiver()
    try:
        http_receiver.status, http_receiver.location = 307, other.url + "/stolen"
        with pytest.raises(ChannelError, match="redirect") as caught:
            WebhookChannel(http_receiver.url, SECRET).send(note())
        assert not caught.value.retryable
        assert other.requests == []
    finally:
        other.close()


def test_a_closed_port_fails_fast_with_a_channel_error() -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/x", SECRET, timeout=2)
    started = time.monotonic()
    with pytest.raises(ChannelError, match="Connection refused"):
        channel.send(note())
    assert time.monotonic() - started < 2


def test_a_silent_server_fails_after_the_channel_timeout(black_hole: BlackHole) -> None:
    started = time.monotonic()
    with pytest.raises(ChannelError, match="timed out"):
        WebhookChannel(black_hole.url, SECRET, timeout=0.5).send(note())
    assert 0.5 <= time.monotonic() - started < 5


# --- SlackChannel ---------------------------------------------------------------------------


def test_slack_payload_shape() -> None:
    channel = SlackChannel("https://hooks.slack.com" + SLACK_HOOK_PATH)
    payload = channel.payload(note(message="disk <90% & rising>", labels={"hostname": "w<1>"}))
    assert set(payload) == {"text", "attachments"}
    assert payload["text"] == (
        "*[CRITICAL] CeleryWorkerDown: firing*\ndisk &lt;90% &amp; rising&gt;"
    )
    (attachment,) = payload["attachments"]
    assert attachment["color"] == "#d00000"
    assert attachment["ts"] == 1_700_000_000
    assert attachment["fallback"].startswith("[CRITICAL] CeleryWorkerDown: firing")
    assert {"title": "hostname", "value": "w&lt;1&gt;", "short": True} in attachment["fields"]
    assert {"title": "down_for_s", "value": "125.5", "short": True} in attachment["fields"]
    assert attachment["footer"] == "fingerprint fp-1"
    resolved = channel.payload(note(state="resolved"))
    assert resolved["attachments"][0]["color"] == "#2eb886"


def test_slack_posts_its_payload(http_receiver: HttpReceiver) -> None:
    channel = SlackChannel(http_receiver.url + SLACK_HOOK_PATH)
    channel.send(note())
    (request,) = http_receiver.wait_for(1)
    assert request.path == SLACK_HOOK_PATH
    assert request.headers["Content-Type"].startswith("application/json")
    assert json.loads(request.body) == channel.payload(note())


def test_slack_url_is_masked_in_repr_and_errors(http_receiver: HttpReceiver) -> None:
    http_receiver.status, http_receiver.reply = 403, b"invalid_token"
    channel = SlackChannel(http_receiver.url + SLACK_HOOK_PATH)
    assert repr(channel) == f"SlackChannel({http_receiver.url}/****)"
    with pytest.raises(ChannelError) as caught:
        channel.send(note())
    message = str(caught.value)
    assert message == f"Slack webhook {http_receiver.url}/**** answered HTTP 403: invalid_token"
    assert "XXXXXXXX" not in message
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://hooks.slack.com/services/T/B/x", "https://hooks.slack.com/****"),
        ("https://user:pw@example.org:8443/a?b=c", "https://example.org:8443/****"),
        ("https://example.org", "https://example.org"),
        ("not a url", "****"),
        ("http://[::1]:80/x", "http://[::1]:80/****"),
    ],
)
def test_mask_endpoint(url: str, masked: str) -> None:
    assert mask_endpoint(url) == masked


# --- EmailChannel ---------------------------------------------------------------------------


def test_email_is_received_with_its_headers_and_body(
    smtp_server: tuple[LoopbackSMTP, Mailbox],
) -> None:
    controller, handler = smtp_server
    channel = EmailChannel(
        "127.0.0.1",
        controller.port,
        "alerts@example.org",
        ["ops@example.org", "oncall@example.org"],
    )
    channel.send(note())
    wait_for(lambda: handler.messages, timeout=10)
    ((envelope, message),) = handler.messages
    assert envelope.mail_from == "alerts@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    assert message["Subject"] == "[CRITICAL] CeleryWorkerDown: firing"
    assert message["From"] == "alerts@example.org"
    assert message["To"] == "ops@example.org, oncall@example.org"
    assert message["X-Alert-Rule"] == "CeleryWorkerDown"
    assert message["X-Alert-State"] == "firing"
    assert message["X-Alert-Fingerprint"] == "fp-1"
    assert message["Message-ID"] and message["Date"]
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert "worker w1 stopped sending heartbeats" in body
    assert "  hostname: w1" in body
    assert "  down_for_s: 125.5" in body
    assert "Time: 2023-11-14T22:13:20+00:00" in body


def test_email_subject_cannot_be_injected(
    smtp_server: tuple[LoopbackSMTP, Mailbox],
) -> None:
    controller, handler = smtp_server
    channel = EmailChannel("127.0.0.1", controller.port, "a@example.org", ["b@example.org"])
    channel.send(note(rule="Evil\r\nBcc: victim@example.org", severity="warning"))
    wait_for(lambda: handler.messages, timeout=10)
    ((envelope, message),) = handler.messages
    assert envelope.rcpt_tos == ["b@example.org"]
    assert message["Bcc"] is None
    assert message["Subject"] == "[WARNING] Evil Bcc: victim@example.org: firing"


def test_email_to_a_closed_port_raises_a_retryable_error() -> None:
    channel = EmailChannel("127.0.0.1", free_port(), "a@example.org", ["b@example.org"])
    with pytest.raises(ChannelError, match=r"SMTP 127\.0\.0\.1") as caught:
        channel.send(note())
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"recipients": []}, "recipient"),
        ({"recipients": ["not-an-address"]}, "address"),
        ({"sender": "x@y\r\nBcc: z@w"}, "address"),
        ({"starttls": True, "use_ssl": True}, "not both"),
        ({"username": "u", "password": "pw-never-shown"}, "clear text"),
        ({"username": "u"}, "both or neither"),
        ({"password": "p"}, "both or neither"),
        ({"port": 0}, "port"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_email_channel_refuses_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {
        "host": "smtp.example.org",
        "port": 25,
        "sender": "a@example.org",
        "recipients": ["b@example.org"],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        EmailChannel(**args)


def test_email_repr_hides_the_password() -> None:
    channel = EmailChannel(
        "smtp.example.org",
        587,
        "a@example.org",
        "b@example.org, c@example.org",
        username="alerts",
        password="hunter2-password",  # noqa: S106 - a test secret
        starttls=True,
    )
    assert "hunter2" not in repr(channel)
    assert channel.recipients == ("b@example.org", "c@example.org")


# --- ChannelDispatcher ----------------------------------------------------------------------


def test_dispatch_returns_at_once_even_when_channels_are_dead(
    dispatchers: list[ChannelDispatcher],  # first: closed last, after the black hole
    http_receiver: HttpReceiver,
    black_hole: BlackHole,
) -> None:
    channels: dict[str, Channel] = {
        "hole": WebhookChannel(black_hole.url, SECRET, timeout=DEAD_TIMEOUT),
        "refused": WebhookChannel(f"http://127.0.0.1:{free_port()}/", SECRET),
        "healthy": WebhookChannel(http_receiver.url, SECRET),
    }
    dispatcher = ChannelDispatcher(channels, retries=1, backoff=0.05, workers=1)
    dispatchers.append(dispatcher)
    slowest = 0.0
    for i in range(50):
        started = time.perf_counter()
        dispatcher.dispatch(["hole", "refused", "healthy"], note(fingerprint=f"fp-{i}"))
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.05
    http_receiver.wait_for(50)


def test_a_dead_channel_does_not_delay_a_healthy_one(
    dispatchers: list[ChannelDispatcher],  # first: closed last, after the black hole
    http_receiver: HttpReceiver,
    black_hole: BlackHole,
) -> None:
    """With one thread per channel, a backlog of sends to a silent server delays nobody else."""
    counter = Counter()
    channels: dict[str, Channel] = {
        "dead": WebhookChannel(black_hole.url, SECRET, timeout=DEAD_TIMEOUT),
        "healthy": WebhookChannel(http_receiver.url, SECRET),
    }
    dispatcher = ChannelDispatcher(channels, retries=0, workers=1, failure_counter=counter)
    dispatchers.append(dispatcher)
    started = time.monotonic()
    for i in range(10):
        dispatcher.dispatch(["dead", "healthy"], note(fingerprint=f"fp-{i}"))
    received = http_receiver.wait_for(10)
    assert max(r.at for r in received) - started < DEAD_TIMEOUT / 3
    wait_for(lambda: dispatcher.stats()["healthy"].sent == 10, timeout=DEAD_TIMEOUT / 3)
    stats = dispatcher.stats()
    assert stats["dead"].sent == 0
    assert stats["dead"].pending + stats["dead"].in_flight == 10  # still waiting on the first
    assert counter.calls == []


def test_retries_back_off_then_count_one_failure_per_notification(
    dispatchers: list[ChannelDispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()
    channel = ScriptedChannel(fail_times=100)
    dispatcher = ChannelDispatcher(
        {"flaky": channel},
        retries=3,
        backoff=0.1,
        max_backoff=0.2,
        workers=1,
        failure_counter=counter,
    )
    dispatchers.append(dispatcher)
    with caplog.at_level(logging.DEBUG, logger="personal_assistant.workers.alerting.delivery"):
        dispatcher.dispatch(["flaky"], note(fingerprint="a"))
        dispatcher.dispatch(["flaky"], note(fingerprint="b"))
        assert dispatcher.flush(timeout=10)

    assert counter.calls == ["flaky", "flaky"]
    times = [t for fp, t in channel.attempts if fp == "a"]
    assert len(times) == 4  # 1 + 3 retries
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Backoff with jitter: attempt k waits within [d/2, d], d = 0.1 * 2^(k-1) capped at 0.2.
    for gap, ceiling in zip(gaps, [0.1, 0.2, 0.2], strict=True):
        assert ceiling / 2 <= gap < ceiling + 1.0
    finals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(finals) == 2  # logged once per notification, not once per attempt
    assert "after 4 attempt(s): boom" in finals[0].getMessage()
    assert dispatcher.stats()["flaky"].failed == 2


def test_real_server_errors_are_retried_and_counted_once(
    http_receiver: HttpReceiver, dispatchers: list[ChannelDispatcher]
) -> None:
    http_receiver.status = 503
    counter = Counter()
    dispatcher = ChannelDispatcher(
        {"webhook": WebhookChannel(http_receiver.url, SECRET)},
        retries=2,
        backoff=0.01,
        failure_counter=counter,
    )
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["webhook"], note(fingerprint="a"))
    dispatcher.dispatch(["webhook"], note(fingerprint="b"))
    assert dispatcher.flush(timeout=10)
    assert len(http_receiver.requests) == 6
    assert counter.calls == ["webhook", "webhook"]


def test_a_transient_failure_is_retried_to_success(dispatchers: list[ChannelDispatcher]) -> None:
    counter = Counter()
    channel = ScriptedChannel(fail_times=2, error=OSError("connection reset"))
    dispatcher = ChannelDispatcher({"c": channel}, retries=3, backoff=0.01, failure_counter=counter)
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["c"], note())
    assert dispatcher.flush(timeout=10)
    assert len(channel.attempts) == 3
    assert channel.delivered == [note()]
    assert counter.calls == []
    assert dispatcher.stats()["c"].sent == 1


def test_a_non_retryable_error_is_not_retried(dispatchers: list[ChannelDispatcher]) -> None:
    counter = Counter()
    channel = ScriptedChannel(fail_times=5, error=ChannelError("bad token", retryable=False))
    dispatcher = ChannelDispatcher({"c": channel}, retries=3, backoff=0.01, failure_counter=counter)
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["c"], note())
    assert dispatcher.flush(timeout=10)
    assert len(channel.attempts) == 1
    assert counter.calls == ["c"]


def test_unknown_channels_are_logged_and_counted(
    dispatchers: list[ChannelDispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()
    channel = ScriptedChannel()
    dispatcher = ChannelDispatcher({"known": channel}, failure_counter=counter)
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["nope", "known", "known"], note())
    assert dispatcher.flush(timeout=10)
    assert counter.calls == ["nope"]
    assert channel.delivered == [note()]  # duplicates in the list send once
    assert any("unknown channel 'nope'" in r.getMessage() for r in caplog.records)


def test_the_queue_is_bounded_and_drops_the_oldest(dispatchers: list[ChannelDispatcher]) -> None:
    gate = threading.Event()
    counter = Counter()
    channel = ScriptedChannel(gate=gate)
    dispatcher = ChannelDispatcher(
        {"slow": channel}, workers=1, queue_size=3, failure_counter=counter
    )
    dispatchers.append(dispatcher)
    try:
        dispatcher.dispatch(["slow"], note(fingerprint="n0"))
        wait_for(lambda: dispatcher.stats()["slow"].in_flight == 1, timeout=5)
        for i in range(1, 7):
            dispatcher.dispatch(["slow"], note(fingerprint=f"n{i}"))
        stats = dispatcher.stats()["slow"]
        assert (stats.pending, stats.dropped) == (3, 3)
        assert counter.calls == ["slow"] * 3
    finally:
        gate.set()
    assert dispatcher.flush(timeout=10)
    assert [n.fingerprint for n in channel.delivered] == ["n0", "n4", "n5", "n6"]


def test_one_alert_stays_in_order_while_others_overtake(
    dispatchers: list[ChannelDispatcher],
) -> None:
    gate = threading.Event()

    class GatedForA(ScriptedChannel):
        def send(self, n: Notification) -> None:
            if n.fingerprint == "A" and n.state == "firing":
                assert gate.wait(30)
            super().send(n)

    channel = GatedForA()
    dispatcher = ChannelDispatcher({"c": channel}, workers=4)
    dispatchers.append(dispatcher)
    try:
        dispatcher.dispatch(["c"], note(fingerprint="A", state="firing"))
        dispatcher.dispatch(["c"], note(fingerprint="A", state="resolved"))
        dispatcher.dispatch(["c"], note(fingerprint="B"))
        # B goes out on another thread while A's firing is stuck; A's resolved waits for it.
        wait_for(lambda: [n.fingerprint for n in channel.delivered] == ["B"], timeout=5)
        assert dispatcher.stats()["c"].pending == 1
    finally:
        gate.set()
    assert dispatcher.flush(timeout=10)
    assert [(n.fingerprint, n.state) for n in channel.delivered] == [
        ("B", "firing"),
        ("A", "firing"),
        ("A", "resolved"),
    ]


def test_flush_times_out_and_close_counts_what_was_left(
    dispatchers: list[ChannelDispatcher],
) -> None:
    gate = threading.Event()
    counter = Counter()
    channel = ScriptedChannel(gate=gate)
    dispatcher = ChannelDispatcher({"c": channel}, workers=1, failure_counter=counter)
    dispatchers.append(dispatcher)
    for i in range(3):
        dispatcher.dispatch(["c"], note(fingerprint=f"n{i}"))
    assert not dispatcher.flush(timeout=0.2)
    try:
        # n0 is in flight (stuck); n1 and n2 wait: close() drops and counts them.
        dispatcher.close(timeout=0.1)
        assert counter.calls == ["c", "c"]
        assert dispatcher.stats()["c"].dropped == 2
        dispatcher.dispatch(["c"], note())  # after close: counted, not raised
        assert counter.calls == ["c", "c", "c"]
    finally:
        gate.set()
    wait_for(lambda: channel.delivered, timeout=5)  # the send in flight still completes
    assert [n.fingerprint for n in channel.delivered] == ["n0"]
    dispatcher.close()  # idempotent


def test_a_raising_failure_counter_breaks_nothing(dispatchers: list[ChannelDispatcher]) -> None:
    def counter(channel: str) -> None:
        raise RuntimeError("metrics down")

    channel = ScriptedChannel(fail_times=1)
    dispatcher = ChannelDispatcher({"c": channel}, retries=0, failure_counter=counter, workers=1)
    dispatchers.append(dispatcher)
    dispatcher.dispatch(["nope"], note())
    dispatcher.dispatch(["c"], note(fingerprint="1"))
    dispatcher.dispatch(["c"], note(fingerprint="2"))
    assert dispatcher.flush(timeout=10)
    assert [n.fingerprint for n in channel.delivered] == ["2"]


@pytest.mark.parametrize(
    "kwargs",
    [{"retries": -1}, {"backoff": -1}, {"backoff": 2, "max_backoff": 1}, {"workers": 0}],
)
def test_dispatcher_refuses_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ChannelDispatcher({}, **kwargs)
