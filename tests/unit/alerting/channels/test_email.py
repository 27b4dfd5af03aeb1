"""The e-mail channel against a real SMTP server on loopback (aiosmtpd): headers, body, no
header injection, a retryable error when the server is gone, and settings refused up front."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from personal_assistant.workers.alerting.channels.base import ChannelError
from personal_assistant.workers.alerting.channels.email import EmailChannel
from tests.support.alert_channels import note
from tests.support.alert_servers import LoopbackSMTP, Mailbox
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for


@pytest.fixture
def smtp_server() -> Iterator[tuple[LoopbackSMTP, Mailbox]]:
    handler = Mailbox()
    controller = LoopbackSMTP(handler)
    controller.start()
    yield controller, handler
    controller.stop()


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
