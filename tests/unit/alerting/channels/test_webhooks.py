"""The log, Slack and signed webhook channels, against real HTTP servers on loopback.

HTTP receivers are ``http.server`` instances; a "dead" endpoint is a socket that accepts
connections and never answers (the worst case: the sender waits for its whole timeout), or a
port nobody listens on. Secrets and URL tokens never show in a repr or an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.channels.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ChannelError,
    LogChannel,
    SlackChannel,
    WebhookChannel,
    mask_endpoint,
    verify_signature,
)
from tests.support.alert_channels import SECRET, BlackHole, HttpReceiver, note
from tests.support.redis_server import free_port

SLACK_HOOK_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"


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
