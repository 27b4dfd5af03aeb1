"""What an outgoing e-mail may contain: the checks of everything ``enqueue_email`` is given.

Each bad input is refused before anything is stored, with a one-line :class:`MailError` naming
it: recipients (plain addresses, a cap on their number), a subject and extra headers without
line breaks or other control characters (a CR/LF in a header is how a caller's text would add
a ``Bcc:`` of its own), extra headers that would override what the outbox sets itself (From,
To, Message-ID, Date, the MIME structure), and body sizes. What passes is a
:class:`MailContent`, which mime.py can always turn into the bytes sent.

Also here: the sender that EMAIL_FROM names, and the Message-ID made in its domain at enqueue.

Pure: no store, no SMTP, no Celery.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import getaddresses, make_msgid, parseaddr
from typing import Final

# RFC 5321 (4.5.3.1.8): a server must accept at least 100 recipients per message; more would be
# refused by some servers after the message was already half sent.
MAX_RECIPIENTS: Final = 100
# RFC 5321 (4.5.3.1.3): a path is at most 256 octets with its brackets, so 254 for the address;
# 64 for the local part (4.5.3.1.1).
MAX_ADDRESS_CHARS: Final = 254
MAX_LOCAL_PART_CHARS: Final = 64
# RFC 5322 (2.1.1): a line is at most 998 characters; a longer subject or header value would be
# folded by some servers and cut by others. Also the width of the subject column.
MAX_HEADER_VALUE_CHARS: Final = 998
# Field names are tokens like "List-Unsubscribe"; 76 keeps "Name: " on one line with room.
MAX_HEADER_NAME_CHARS: Final = 76
# Extra headers per message: a few (Reply-To, List-Unsubscribe, X-...) is what callers need.
MAX_EXTRA_HEADERS: Final = 32
# Each body part, UTF-8 encoded. Transactional mail is a few kilobytes; 1 MiB per part keeps a
# batch of messages small in a worker's memory and far below providers' 10-25 MB message limits.
MAX_BODY_BYTES: Final = 1024 * 1024
# The message_id column's width.
MAX_MESSAGE_ID_CHARS: Final = 255

# Headers the outbox sets itself (or that only servers set): an extra header of these names is
# refused rather than silently sent twice or overriding the stored Message-ID or recipients.
RESERVED_HEADERS: Final = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "return-path",
        "received",
    }
)
# Prefixes of reserved families: resent fields (RFC 5322 3.6.6) and the MIME Content-* fields.
RESERVED_HEADER_PREFIXES: Final = ("resent-", "content-")
# Extra headers whose value is a list of addresses: checked as addresses, and a display name
# is encoded on its own (encoding the whole value would garble the address).
ADDRESS_HEADERS: Final = frozenset(
    {"reply-to", "mail-reply-to", "mail-followup-to", "disposition-notification-to"}
)


class MailError(ValueError):
    """An e-mail that cannot be sent as given (the message says which input and why)."""


# --- Checks ---------------------------------------------------------------------------------


# Characters that would break a header line: the control characters (Unicode category Cc: CR,
# LF, NUL and the rest) but tab, which is folding white space, and the Unicode line separators.
_BREAKING = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def control_character(text: str) -> str | None:
    """The first character that would break a header line, or None."""
    found = _BREAKING.search(text)
    return found.group() if found else None


def check_address(value: object, what: str = "address") -> str:
    """``value`` as one plain e-mail address (``user@example.org``), or a MailError.

    Display names (``Ann <ann@example.org>``) and lists are refused: each recipient is one
    address. Non-ASCII addresses need SMTPUTF8, which many servers lack: give the domain in its
    punycode form (``xn--...``) instead.
    """
    if not isinstance(value, str):
        raise MailError(f"{what} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise MailError(f"{what} is empty")
    shown = text[:80]
    if control_character(text) is not None:
        raise MailError(f"{what} {shown!r} contains a line break or control character")
    if len(text) > MAX_ADDRESS_CHARS:
        raise MailError(f"{what} is {len(text)} characters long, at most {MAX_ADDRESS_CHARS}")
    if "," in text or ";" in text:
        raise MailError(f"{what} {shown!r} holds several addresses: give a list instead")
    if not text.isascii():
        raise MailError(
            f"{what} {shown!r} is not ASCII: write the domain in punycode (xn--...); "
            "non-ASCII local parts are not supported"
        )
    try:
        address = Address(addr_spec=text)
    except Exception:  # headerregistry raises several types (ValueError, HeaderParseError)
        raise MailError(f"{what} {shown!r} is not an e-mail address (user@example.org)") from None
    if not address.username or not address.domain or address.addr_spec != text:
        raise MailError(f"{what} {shown!r} is not an e-mail address (user@example.org)")
    if len(address.username) > MAX_LOCAL_PART_CHARS:
        raise MailError(f"{what} {shown!r}: the part before @ is longer than 64 characters")
    return text


def check_recipients(to: object) -> tuple[str, ...]:
    """One address or a list of them, checked; repeats dropped (first one kept)."""
    if isinstance(to, str):
        items: list[object] = [to]
    elif isinstance(to, Sequence) and not isinstance(to, (bytes, bytearray)):
        items = list(to)
    else:
        raise MailError(f"to must be an address or a list of addresses, got {type(to).__name__}")
    if not items:
        raise MailError("to is empty: give at least one recipient")
    if len(items) > MAX_RECIPIENTS:
        raise MailError(f"{len(items)} recipients, at most {MAX_RECIPIENTS} per message")
    seen: dict[str, str] = {}
    for index, item in enumerate(items):
        address = check_address(item, f"recipient {index + 1}")
        seen.setdefault(address.lower(), address)
    return tuple(seen.values())


def check_subject(subject: object) -> str:
    """A one-line subject of at most 998 characters (an empty one is allowed)."""
    if not isinstance(subject, str):
        raise MailError(f"subject must be a string, got {type(subject).__name__}")
    bad = control_character(subject)
    if bad is not None:
        raise MailError(
            f"subject contains a line break or control character ({bad!r}): "
            "header injection refused"
        )
    if len(subject) > MAX_HEADER_VALUE_CHARS:
        raise MailError(f"subject is {len(subject)} characters long, at most 998")
    return subject


def check_headers(headers: object) -> dict[str, str]:
    """Extra headers: printable names, one-line values, none the outbox sets itself."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise MailError(f"headers must be a mapping of name to value, got {type(headers).__name__}")
    if len(headers) > MAX_EXTRA_HEADERS:
        raise MailError(f"{len(headers)} extra headers, at most {MAX_EXTRA_HEADERS}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise MailError("header names and values must be strings")
        if not name or len(name) > MAX_HEADER_NAME_CHARS:
            raise MailError(f"header name {name[:80]!r} must be 1 to 76 characters")
        if not all(33 <= ord(ch) <= 126 and ch != ":" for ch in name):
            raise MailError(
                f"header name {name[:80]!r} may hold printable ASCII only, no spaces or colon"
            )
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIXES):
            raise MailError(
                f"header {name!r} is set by the outbox itself and cannot be overridden "
                "(recipients go in to=, the subject in subject=)"
            )
        if any(existing.lower() == lowered for existing in checked):
            raise MailError(f"header {name!r} is given twice")
        bad = control_character(value)
        if bad is not None:
            raise MailError(
                f"header {name!r} contains a line break or control character ({bad!r}): "
                "header injection refused"
            )
        if len(value) > MAX_HEADER_VALUE_CHARS:
            raise MailError(f"header {name!r} is {len(value)} characters long, at most 998")
        if lowered in ADDRESS_HEADERS:
            header_addresses(name, value)
        checked[name] = value
    return checked


def header_addresses(name: str, value: str) -> list[tuple[str, str]]:
    """The (display name, address) pairs of an address header's value, each address checked."""
    pairs = getaddresses([value])
    if not pairs or not all(address for _, address in pairs):
        raise MailError(f"header {name!r} is not valid: give one or more e-mail addresses")
    for _, address in pairs:
        try:
            check_address(address, f"header {name!r} address")
        except MailError as exc:
            raise MailError(f"header {name!r} is not valid: {exc}") from None
    return pairs


def check_body(body: object, what: str, *, optional: bool = False) -> str | None:
    """A body part: a string of at most MAX_BODY_BYTES (UTF-8), without NUL characters."""
    if body is None and optional:
        return None
    if not isinstance(body, str):
        raise MailError(f"{what} must be a string, got {type(body).__name__}")
    size = len(body.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise MailError(f"{what} is {size} bytes, at most {MAX_BODY_BYTES} (1 MiB)")
    if "\x00" in body:
        raise MailError(f"{what} contains a NUL character, which SMTP cannot carry")
    return body


# --- Content, sender, Message-ID ------------------------------------------------------------


@dataclass(frozen=True)
class MailContent:
    """A message's checked content: what the outbox stores besides its sender and ids."""

    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sender:
    """EMAIL_FROM taken apart: the From header as configured, the envelope address, its domain."""

    header: str
    address: str
    domain: str


@functools.lru_cache(maxsize=64)
def sender_of(email_from: str, what: str = "EMAIL_FROM") -> Sender:
    """The sender ``email_from`` names (``assistant@example.org`` or ``Assistant <...>``).

    Cached: every message of a deployment has the same sender, parsed once per process.
    """
    if not email_from.strip():
        raise MailError(f"{what} is not set: it is the From of every message")
    if control_character(email_from) is not None:
        raise MailError(f"{what} contains a line break or control character")
    _, address = parseaddr(email_from)
    address = check_address(address or email_from, what)
    return Sender(email_from.strip(), address, address.rpartition("@")[2])


def new_message_id(domain: str) -> str:
    """A fresh Message-ID in the sender's domain (time, process and 64 random bits)."""
    message_id = make_msgid(domain=domain)
    if len(message_id) > MAX_MESSAGE_ID_CHARS:  # pragma: no cover - a 254-char address's domain
        raise MailError(f"the Message-ID for domain {domain[:40]!r}... would be too long")
    return message_id


def check_content(
    to: object,
    subject: object,
    text: object,
    html: object = None,
    headers: object = None,
) -> MailContent:
    """Every part of a message checked: what :func:`~.mime.build_message` can always build."""
    return MailContent(
        recipients=check_recipients(to),
        subject=check_subject(subject),
        text=check_body(text, "text") or "",
        html=check_body(html, "html", optional=True),
        headers=check_headers(headers),
    )
