"""Webhook signatures: HMAC-SHA256 over the timestamp and the body, checked within a window.

The scheme, which a receiver implements (or calls :func:`verify_signature` for)::

    X-Alert-Timestamp: <t>             Unix time in whole seconds, decimal, when it was signed
    X-Signature-256:   sha256=<hex>    HMAC-SHA256(secret, b"<t>." + raw body), 64 hex digits

The receiver takes the timestamp header as sent, appends a dot and the raw body bytes exactly as
received, computes the HMAC with the shared secret, compares it in constant time with the hex
after ``sha256=``, and refuses a timestamp more than ``WEBHOOK_MAX_AGE_S`` (300 s) away from its
own clock, in the past or in the future. Signing the timestamp with the body is what makes the
window hold: a captured request cannot be replayed later, and its timestamp cannot be refreshed
without the secret. Within the window a receiver that must never act twice can drop repeats of
the body's ``fingerprint`` + ``state`` + ``timestamp``.

The secret is at least ``WEBHOOK_MIN_SECRET_BYTES`` (32) bytes of UTF-8: the size of the HMAC's
output, so the key is never the weak part. ``python -c "import secrets;
print(secrets.token_hex(32))"`` makes one.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

from personal_assistant.workers import constants as c

SIGNATURE_HEADER: Final = "X-Signature-256"
TIMESTAMP_HEADER: Final = "X-Alert-Timestamp"
SIGNATURE_PREFIX: Final = "sha256="
# A Unix time in seconds has 10 digits until the year 2286; anything longer is not a timestamp
# (and int() of a huge digit string costs time, or raises past 4,300 digits).
_MAX_TIMESTAMP_DIGITS: Final = 12
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_HEX_LENGTH: Final = 2 * hashlib.sha256().digest_size


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot sign webhooks (never showing it), or None when it can."""
    if not isinstance(secret, str) or not secret.strip():
        return "a webhook channel needs a non-empty secret to sign its requests"
    try:
        size = len(secret.encode("utf-8"))
    except UnicodeEncodeError:
        return "the webhook secret is not valid text (lone surrogates)"
    if size < c.WEBHOOK_MIN_SECRET_BYTES:
        return (
            f"the webhook secret must be at least {c.WEBHOOK_MIN_SECRET_BYTES} bytes (an"
            " HMAC-SHA256 key); make one with: python -c"
            " 'import secrets; print(secrets.token_hex(32))'"
        )
    return None


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Signature-256`` value of ``body`` sent with ``X-Alert-Timestamp: timestamp``."""
    message = f"{int(timestamp)}.".encode() + bytes(body)
    return SIGNATURE_PREFIX + hmac.new(secret, message, hashlib.sha256).hexdigest()


def _as_text(value: object) -> str | None:
    """A header value as ASCII text, or None (headers may arrive as bytes, or be missing)."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("ascii").strip()
        except UnicodeDecodeError:
            return None
    if isinstance(value, str) and value.isascii():
        return value.strip()
    return None


def _secret_bytes(secret: object) -> bytes | None:
    if isinstance(secret, bytes | bytearray):
        return bytes(secret) or None
    if isinstance(secret, str) and secret:
        try:
            return secret.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return None


def _parse(header: object, timestamp: object) -> tuple[str, str] | None:
    """(hex digest, timestamp text) of well-formed headers, else None."""
    signature, stamp = _as_text(header), _as_text(timestamp)
    if signature is None or stamp is None:
        return None
    # isdigit() alone takes other scripts' digits; _as_text let only ASCII through.
    if not stamp.isdigit() or len(stamp) > _MAX_TIMESTAMP_DIGITS:
        return None
    if not signature.startswith(SIGNATURE_PREFIX):
        return None
    digest = signature[len(SIGNATURE_PREFIX) :].lower()
    if len(digest) != _HEX_LENGTH or not _HEX_DIGITS.issuperset(digest):
        return None
    return digest, stamp


def _fresh(stamp: str, now: float | None, max_age: float) -> bool:
    clock = time.time() if now is None else now
    try:
        return abs(float(clock) - int(stamp)) <= max_age
    except (TypeError, ValueError, OverflowError):
        return False


def verify_signature(
    body: bytes,
    header: str | bytes | None,
    secret: str | bytes,
    timestamp: str | bytes | None,
    *,
    now: float | None = None,
    max_age: float = c.WEBHOOK_MAX_AGE_S,
) -> bool:
    """For receivers: True when ``header`` signs ``timestamp`` + ``body`` and is fresh.

    ``header`` is the ``X-Signature-256`` value and ``timestamp`` the ``X-Alert-Timestamp``
    value as received; ``now`` defaults to the receiver's clock. Any malformed input (missing,
    non-ASCII, wrong prefix or length, a timestamp that is not whole seconds) gives False; this
    function never raises.
    """
    key = _secret_bytes(secret)
    parsed = _parse(header, timestamp)
    if key is None or parsed is None or not isinstance(body, bytes | bytearray | memoryview):
        return False
    digest, stamp = parsed
    if not _fresh(stamp, now, max_age):
        return False
    message = stamp.encode() + b"." + bytes(body)
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, digest)
