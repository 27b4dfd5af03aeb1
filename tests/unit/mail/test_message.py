"""An outgoing e-mail is checked before it is stored: each bad input is refused with a clear
error naming it, header injection above all, and the sender comes from EMAIL_FROM."""

from __future__ import annotations

import pytest

from personal_assistant.workers.mail.message import (
    MAX_BODY_BYTES,
    MAX_RECIPIENTS,
    MailError,
    check_content,
    check_recipients,
    new_message_id,
    sender_of,
)


def test_one_address_string_is_one_recipient_and_repeats_are_dropped() -> None:
    assert check_recipients("ann@example.org") == ("ann@example.org",)
    assert check_recipients(["ann@example.org", "ANN@example.org", "bob@example.org"]) == (
        "ann@example.org",
        "bob@example.org",
    )


@pytest.mark.parametrize(
    ("to", "error"),
    [
        ("not-an-address", "recipient 1 'not-an-address' is not an e-mail address"),
        ("Ann <ann@example.org>", "is not an e-mail address"),
        ("ann@example.org, bob@example.org", "holds several addresses: give a list instead"),
        (["ann@example.org", "bob@@example.org"], "recipient 2 'bob@@example.org' is not an"),
        ("ann@example.org\r\nBcc: all@example.org", "contains a line break or control"),
        ("anné@example.org", "is not ASCII"),
        ([], "to is empty"),
        ("", "recipient 1 is empty"),
        (42, "to must be an address or a list of addresses, got int"),
        ([None], "recipient 1 must be a string, got NoneType"),
        ("x" * 65 + "@example.org", "the part before @ is longer than 64 characters"),
        ("a@" + "b" * 260 + ".org", "at most 254"),
    ],
)
def test_a_bad_recipient_is_refused_naming_it(to: object, error: str) -> None:
    with pytest.raises(MailError) as info:
        check_recipients(to)
    assert error in str(info.value)


def test_more_recipients_than_the_cap_are_refused() -> None:
    many = [f"user{i}@example.org" for i in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(MailError, match=r"101 recipients, at most 100 per message"):
        check_recipients(many)
    assert len(check_recipients(many[:MAX_RECIPIENTS])) == MAX_RECIPIENTS


@pytest.mark.parametrize(
    "subject",
    ["Hi\r\nBcc: victim@example.org", "Hi\nX-Injected: 1", "Hi\rthere", "Hi\x0bthere", "a\u2028b"],
)
def test_a_subject_with_a_line_break_is_refused_as_header_injection(subject: str) -> None:
    with pytest.raises(MailError, match="subject contains a line break or control character"):
        check_content("ann@example.org", subject, "body")


def test_a_subject_longer_than_a_header_line_is_refused() -> None:
    with pytest.raises(MailError, match="subject is 999 characters long, at most 998"):
        check_content("ann@example.org", "s" * 999, "body")


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "Bcc",
        "Message-ID",
        "Date",
        "Subject",
        "Sender",
        "Content-Type",
        "MIME-Version",
        "Resent-From",
        "Return-Path",
    ],
)
def test_an_extra_header_may_not_override_what_the_outbox_sets(name: str) -> None:
    with pytest.raises(MailError, match=f"header '{name}' is set by the outbox itself"):
        check_content("ann@example.org", "Hi", "body", headers={name: "x@example.org"})


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"X-Note": "ok\r\nBcc: victim@example.org"}, "header 'X-Note' contains a line break"),
        ({"X Note": "v"}, "may hold printable ASCII only, no spaces or colon"),
        ({"X-Note:": "v"}, "may hold printable ASCII only, no spaces or colon"),
        ({"": "v"}, "must be 1 to 76 characters"),
        ({"X-A": "1", "x-a": "2"}, "header 'x-a' is given twice"),
        ({"Reply-To": "not an address"}, "header 'Reply-To' is not valid"),
        ({"X-Long": "v" * 999}, "header 'X-Long' is 999 characters long"),
        ({f"X-{i}": "v" for i in range(33)}, "33 extra headers, at most 32"),
        (["X-A", "1"], "headers must be a mapping"),
        ({"X-Number": 5}, "header names and values must be strings"),
    ],
)
def test_a_bad_extra_header_is_refused(headers: object, error: str) -> None:
    with pytest.raises(MailError) as info:
        check_content("ann@example.org", "Hi", "body", headers=headers)
    assert error in str(info.value)


def test_a_body_over_the_size_cap_is_refused() -> None:
    with pytest.raises(MailError, match=r"text is 1048577 bytes, at most 1048576 \(1 MiB\)"):
        check_content("ann@example.org", "Hi", "x" * (MAX_BODY_BYTES + 1))
    with pytest.raises(MailError, match="html is"):
        check_content("ann@example.org", "Hi", "ok", html="é" * (MAX_BODY_BYTES // 2 + 1))
    assert check_content("ann@example.org", "Hi", "x" * MAX_BODY_BYTES).text


def test_a_body_with_a_nul_character_or_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(MailError, match="text contains a NUL character"):
        check_content("ann@example.org", "Hi", "a\x00b")
    with pytest.raises(MailError, match="text must be a string, got bytes"):
        check_content("ann@example.org", "Hi", b"bytes")
    with pytest.raises(MailError, match="html must be a string, got int"):
        check_content("ann@example.org", "Hi", "ok", html=3)


def test_the_sender_and_message_id_domain_come_from_email_from() -> None:
    sender = sender_of("Personal Assistant <assistant@mail.example.org>")
    assert (sender.header, sender.address, sender.domain) == (
        "Personal Assistant <assistant@mail.example.org>",
        "assistant@mail.example.org",
        "mail.example.org",
    )
    message_id = new_message_id(sender.domain)
    assert message_id.startswith("<") and message_id.endswith("@mail.example.org>")
    assert new_message_id(sender.domain) != message_id


def test_an_unset_or_bad_email_from_is_refused_naming_the_variable() -> None:
    with pytest.raises(MailError, match="EMAIL_FROM is not set"):
        sender_of("")
    with pytest.raises(MailError, match="EMAIL_FROM 'nobody' is not an e-mail address"):
        sender_of("nobody")
