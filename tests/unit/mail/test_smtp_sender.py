"""One SMTP connection against a real server (aiosmtpd on loopback): STARTTLS, implicit TLS
and login work; each message's fate is classified (accepted, 4xx deferred, 5xx rejected with
the server's reply); a dropped or stalled connection defers the message and the next one goes
out on a new connection; a server that cannot be used raises before any message is touched."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import pytest

from personal_assistant.workers.mail.message import check_content
from personal_assistant.workers.mail.mime import build_message
from personal_assistant.workers.mail.smtp_sender import (
    Delivery,
    Outcome,
    SmtpConfig,
    SmtpSession,
    SmtpSetupError,
    SmtpUnavailable,
)
from tests.support.certificates import Certificate
from tests.support.redis_server import free_port
from tests.support.smtp_outbox import OutboxMailbox, smtp_server

USER = "outbox"
PASSWORD = "smtp-Pa55word-never-shown"  # noqa: S105 - a test secret
SENDER = "assistant@example.org"


def message(to: str, n: int = 1) -> bytes:
    content = check_content(to, f"message {n}", f"body {n}\n")
    return build_message(
        content, sender=SENDER, message_id=f"<{n}@example.org>", date=datetime.now(UTC)
    )


def send(session: SmtpSession, to: str, n: int = 1) -> Delivery:
    return session.send(message(to, n), SENDER, [to])


def plain(port: int, timeout: float = 5.0) -> SmtpConfig:
    return SmtpConfig("127.0.0.1", port, "none", timeout=timeout)


def test_starttls_with_login_delivers_the_message_with_its_envelope(
    certificate: Certificate,
) -> None:
    mailbox = OutboxMailbox(user=USER, password=PASSWORD)
    with smtp_server(
        mailbox,
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=mailbox.authenticate,
    ) as server:
        config = SmtpConfig("127.0.0.1", server.port, "starttls", USER, PASSWORD, timeout=5)
        with SmtpSession(config, ssl_context=certificate.client_context()) as session:
            first = send(session, "ann@example.org", 1)
            second = send(session, "bob@example.org", 2)

    assert (first.outcome, second.outcome) == (Outcome.SENT, Outcome.SENT)
    assert mailbox.logins == [True]
    assert session.connections == 1
    assert [(r.message_id, r.mail_from, r.rcpt_tos) for r in mailbox.received] == [
        ("<1@example.org>", SENDER, ("ann@example.org",)),
        ("<2@example.org>", SENDER, ("bob@example.org",)),
    ]
    assert mailbox.received[0].parsed()["Subject"] == "message 1"


def test_implicit_tls_delivers_the_message(certificate: Certificate) -> None:
    mailbox = OutboxMailbox()
    with smtp_server(mailbox, ssl_context=certificate.server_context()) as server:
        config = SmtpConfig("127.0.0.1", server.port, "ssl", timeout=5)
        with SmtpSession(config, ssl_context=certificate.client_context()) as session:
            assert send(session, "ann@example.org").outcome is Outcome.SENT
    assert [r.message_id for r in mailbox.received] == ["<1@example.org>"]


def test_an_untrusted_certificate_is_a_setup_error_and_nothing_is_sent(
    certificate: Certificate,
) -> None:
    mailbox = OutboxMailbox()
    with smtp_server(
        mailbox, tls_context=certificate.server_context(), require_starttls=True
    ) as server:
        # The system's trust store, which does not hold the test's self-signed certificate.
        session = SmtpSession(SmtpConfig("127.0.0.1", server.port, "starttls", timeout=5))
        with pytest.raises(SmtpSetupError, match="certificate not trusted"):
            session.open()
    assert mailbox.received == []


def test_a_refused_login_is_a_setup_error_that_never_shows_the_password(
    certificate: Certificate,
) -> None:
    mailbox = OutboxMailbox(user=USER, password=PASSWORD)
    with smtp_server(
        mailbox,
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=mailbox.authenticate,
    ) as server:
        config = SmtpConfig("127.0.0.1", server.port, "starttls", USER, "wrong-" + PASSWORD)
        session = SmtpSession(config, ssl_context=certificate.client_context())
        with pytest.raises(SmtpSetupError, match="refused the login of SMTP_USERNAME: 535") as e:
            session.open()
    assert PASSWORD not in str(e.value)
    assert PASSWORD not in repr(config)
    assert mailbox.logins and not any(mailbox.logins)  # smtplib tries PLAIN, then LOGIN


def test_a_server_without_starttls_is_refused_rather_than_used_in_clear_text() -> None:
    with smtp_server(OutboxMailbox()) as server:
        session = SmtpSession(SmtpConfig("127.0.0.1", server.port, "starttls", timeout=5))
        with pytest.raises(SmtpSetupError, match="does not offer STARTTLS"):
            session.open()


def test_a_server_that_does_not_answer_is_unavailable_a_transient_error() -> None:
    session = SmtpSession(plain(free_port(), timeout=2))
    with pytest.raises(SmtpUnavailable, match=r"SMTP 127\.0\.0\.1:\d+ unreachable"):
        session.open()
    assert not session.is_open


def test_a_4xx_reply_defers_the_message_and_the_connection_goes_on() -> None:
    mailbox = OutboxMailbox(rcpt_replies={"busy@example.org": "450 4.2.1 mailbox busy"})
    with smtp_server(mailbox) as server, SmtpSession(plain(server.port)) as session:
        deferred = send(session, "busy@example.org", 1)
        sent = send(session, "ann@example.org", 2)
    assert (deferred.outcome, deferred.code) == (Outcome.DEFERRED, 450)
    assert "450 4.2.1 mailbox busy" in deferred.reply
    assert sent.outcome is Outcome.SENT
    assert session.connections == 1
    assert [r.message_id for r in mailbox.received] == ["<2@example.org>"]


def test_a_5xx_reply_rejects_the_message_with_the_servers_reply() -> None:
    mailbox = OutboxMailbox(
        rcpt_replies={"gone@example.org": "550 5.1.1 <gone@example.org>: no such user"},
        data_replies={"spam@example.org": "554 5.7.1 message refused as spam"},
    )
    with smtp_server(mailbox) as server, SmtpSession(plain(server.port)) as session:
        at_rcpt = send(session, "gone@example.org", 1)
        at_data = send(session, "spam@example.org", 2)
        sent = send(session, "ann@example.org", 3)
    assert (at_rcpt.outcome, at_rcpt.code) == (Outcome.REJECTED, 550)
    assert at_rcpt.reply == "gone@example.org: 550 5.1.1 <gone@example.org>: no such user"
    assert (at_data.outcome, at_data.code, at_data.reply) == (
        Outcome.REJECTED,
        554,
        "554 5.7.1 message refused as spam",
    )
    assert sent.outcome is Outcome.SENT
    assert [r.message_id for r in mailbox.received] == ["<3@example.org>"]


def test_recipients_refused_beside_accepted_ones_are_reported_with_a_sent_message() -> None:
    mailbox = OutboxMailbox(rcpt_replies={"gone@example.org": "550 5.1.1 no such user"})
    with smtp_server(mailbox) as server, SmtpSession(plain(server.port)) as session:
        both = ["ann@example.org", "gone@example.org"]
        content = check_content(both, "hi", "body")
        built = build_message(
            content, sender=SENDER, message_id="<p@example.org>", date=datetime.now(UTC)
        )
        delivery = session.send(built, SENDER, both)
    assert delivery.outcome is Outcome.SENT
    assert delivery.refused == {"gone@example.org": "550 5.1.1 no such user"}
    assert mailbox.received[0].rcpt_tos == ("ann@example.org",)


def test_a_421_closing_reply_defers_and_the_next_message_uses_a_new_connection() -> None:
    mailbox = OutboxMailbox(data_replies={"closing@example.org": "421 4.3.2 shutting down"})
    with smtp_server(mailbox) as server, SmtpSession(plain(server.port)) as session:
        deferred = send(session, "closing@example.org", 1)
        assert not session.is_open
        sent = send(session, "ann@example.org", 2)
    assert (deferred.outcome, deferred.code) == (Outcome.DEFERRED, 421)
    assert sent.outcome is Outcome.SENT
    assert session.connections == 2
    assert mailbox.connections == 2


def test_a_server_that_stalls_past_the_timeout_defers_the_message() -> None:
    mailbox = OutboxMailbox(stall=frozenset({"slow@example.org"}), stall_seconds=3)
    with smtp_server(mailbox) as server, SmtpSession(plain(server.port, 0.5)) as session:
        deferred = send(session, "slow@example.org", 1)
        sent = send(session, "ann@example.org", 2)
    assert (deferred.outcome, deferred.code) == (Outcome.DEFERRED, None)
    assert "timed out" in deferred.reply
    assert sent.outcome is Outcome.SENT
    assert session.connections == 2


def test_the_sessions_tls_context_defaults_to_the_systems_trust_store() -> None:
    session = SmtpSession(SmtpConfig("127.0.0.1", 1, "ssl"))
    context = session._context()  # what production uses when no context is given
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
