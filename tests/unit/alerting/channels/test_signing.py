"""Webhook signatures: a replayed, stale or future-dated request is refused, and verification
returns False on any malformed input instead of raising."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personal_assistant.workers import constants as c
from personal_assistant.workers.alerting.channels.signing import verify_signature
from personal_assistant.workers.alerting.channels.webhooks import WebhookChannel
from tests.support.alert_channels import SECRET, note


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
