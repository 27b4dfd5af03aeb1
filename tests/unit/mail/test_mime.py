"""The bytes sent for a message: the stored Message-ID and Date, an HTML alternative, 7-bit
ASCII with CRLF line ends and folded headers whatever the content, the same bytes at every
attempt, and the body arriving as written; a stored field with a line break is refused again."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from personal_assistant.workers.mail.message import MailContent, MailError, check_content
from personal_assistant.workers.mail.mime import build_message

WHEN = datetime(2030, 5, 17, 9, 30, tzinfo=UTC)


def parse(raw: bytes) -> EmailMessage:
    """The message as a receiver reads it."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_message_is_built_with_the_stored_message_id_date_and_an_html_alternative() -> None:
    content = check_content(
        ["ann@example.org", "bob@example.net"],
        "Your weekly summary",
        "Hello,\nthree things happened.\n",
        html="<p>Hello, <b>three</b> things happened.</p>",
        headers={"Reply-To": "help@example.org", "X-Assistant-Kind": "summary"},
    )
    message = parse(
        build_message(
            content,
            sender="Assistant <assistant@example.org>",
            message_id="<1.2.3@example.org>",
            date=WHEN,
        )
    )

    assert message["From"] == "Assistant <assistant@example.org>"
    assert message["To"] == "ann@example.org, bob@example.net"
    assert message["Subject"] == "Your weekly summary"
    assert message["Message-ID"] == "<1.2.3@example.org>"
    assert message["Date"].datetime == WHEN
    assert message["Reply-To"] == "help@example.org"
    assert message["X-Assistant-Kind"] == "summary"
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content() == "Hello,\r\nthree things happened.\r\n"  # CRLF on the wire
    assert html.get_content_type() == "text/html"
    assert "<b>three</b>" in html.get_content()


def test_building_twice_gives_the_same_bytes_so_a_resent_copy_is_the_same_message() -> None:
    content = check_content("ann@example.org", "Hi", "body", html="<p>body</p>")
    first, second = (
        build_message(content, sender="a@example.org", message_id="<x@example.org>", date=WHEN)
        for _ in range(2)
    )
    assert first == second


def test_the_message_is_7bit_ascii_with_crlf_line_ends_and_short_lines() -> None:
    content = check_content(
        [f"user{n}@example.org" for n in range(40)],
        "Grüße aus Köln " * 20,
        "Zeile eins\nline two\n.a line starting with a dot\n" + "x" * 2000 + "\n",
        html="<p>Grüße</p>",
        headers={"Reply-To": "Hélène <help@example.org>", "X-Note": "naïve " * 50},
    )
    raw = build_message(
        content, sender="Persönlicher Assistent <a@example.org>", message_id="<x@e.org>", date=WHEN
    )
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no bare line feed: some servers refuse one
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in header_block.split(b"\r\n")) <= 78
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998

    message = parse(raw)
    assert message["Subject"] == "Grüße aus Köln " * 20
    assert message["From"] == "Persönlicher Assistent <a@example.org>"
    assert message["Reply-To"] == "Hélène <help@example.org>"
    assert message["X-Note"] == "naïve " * 50
    assert len(message["To"].addresses) == 40
    text, html = message.iter_parts()
    assert text.get_content().replace("\r\n", "\n") == content.text
    assert html.get_content().replace("\r\n", "\n") == "<p>Grüße</p>"
    assert message.defects == [] and text.defects == [] and html.defects == []


@pytest.mark.parametrize("text", ["", "one line", "two\nlines\n", "é\n", "a\r\nb\rc\n"])
def test_a_text_body_arrives_as_written_trailing_line_break_included(text: str) -> None:
    raw = build_message(
        check_content("a@example.org", "s", text),
        sender="a@example.org",
        message_id="<x@example.org>",
        date=WHEN,
    )
    received = parse(raw).get_content().replace("\r\n", "\n")
    assert received == text.replace("\r\n", "\n").replace("\r", "\n")


def test_a_naive_date_is_refused() -> None:
    content = check_content("ann@example.org", "Hi", "body")
    with pytest.raises(MailError, match="timezone-aware"):
        build_message(
            content, sender="a@example.org", message_id="<x@example.org>", date=datetime(2030, 1, 1)
        )


def test_a_stored_field_with_a_line_break_is_refused_even_unchecked() -> None:
    # Rows may be written by something other than check_content: the builder checks again.
    tampered = MailContent(("ann@example.org",), "Hi", "body", headers={"X-A": "1\r\nBcc: x@y"})
    with pytest.raises(MailError, match="contains a line break: refused"):
        build_message(tampered, sender="a@example.org", message_id="<x@example.org>", date=WHEN)
