"""Alert channels end to end against real servers on 127.0.0.1 (ephemeral ports).

- SMTP: aiosmtpd, with STARTTLS and AUTH (a certificate made for the test by ``openssl``),
  implicit TLS, a refused login, and a server that would take a login in clear text (refused
  by the configuration before any connection);
- Slack and the generic webhook: ``http.server`` receivers; the webhook receiver verifies the
  HMAC signature with the shared secret and answers 401 when it does not match;
- the channels are built from ``ALERT_*`` variables (``AlertChannelSettings`` and
  ``channels_from_settings``) and driven by ``ChannelDispatcher``, and no password, secret or
  webhook token appears in any captured log record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping

import pytest

from personal_assistant.workers.alerting.channels.config import channels_from_settings
from personal_assistant.workers.alerting.channels.webhooks import (
    Channel,
    ChannelDispatcher,
    ChannelError,
    EmailChannel,
    Notification,
)
from personal_assistant.workers.config import AlertChannelSettings, ConfigError
from tests.support.alert_servers import LoopbackSMTP, Mailbox, Receiver
from tests.support.certificates import Certificate

pytestmark = pytest.mark.integration

SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-Pa55word-never-logged"  # noqa: S105 - a test secret
WEBHOOK_SECRET = "webhook-shared-secret-never-logged"  # noqa: S105 - a test secret
SLACK_PATH = "/services/T0TEST/B0TEST/slacktokenneverlogged"
SECRETS = (SMTP_PASSWORD, WEBHOOK_SECRET, "slacktokenneverlogged")


def channels_of(variables: Mapping[str, str]) -> dict[str, Channel]:
    """The channels the ALERT_* ``variables`` configure, checked as at start-up."""
    return channels_from_settings(AlertChannelSettings.from_variables(variables))


def notification(state: str = "firing") -> Notification:
    return Notification(
        rule="CeleryQueueBacklog",
        state=state,
        severity="warning",
        message="queue default holds 1500 waiting tasks",
        labels={"queue_name": "default"},
        fields={"value": 1500},
        fingerprint="backlog-default",
        timestamp=1_700_000_000.0,
    )


# --- Servers --------------------------------------------------------------------------------


@pytest.fixture
def trust_certificate(certificate: Certificate, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust the test certificate the standard way (OpenSSL reads SSL_CERT_FILE), as an
    operator would for an internal SMTP relay: no channel option needed."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))


@pytest.fixture
def starttls_smtp(certificate: Certificate) -> Iterator[tuple[LoopbackSMTP, Mailbox]]:
    """SMTP that requires STARTTLS, then AUTH, before it takes mail."""
    mailbox = Mailbox(SMTP_USER, SMTP_PASSWORD)
    controller = LoopbackSMTP(
        mailbox,
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=mailbox.authenticate,
    )
    controller.start()
    yield controller, mailbox
    controller.stop()


@pytest.fixture
def slack() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    server = Receiver(secret=WEBHOOK_SECRET)
    yield server
    server.close()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "expected some log records to inspect"
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} logged by {record.name}: {text}"


# --- Tests ----------------------------------------------------------------------------------


def test_every_channel_from_the_environment_delivers(
    starttls_smtp: tuple[LoopbackSMTP, Mailbox],
    slack: Receiver,
    webhook: Receiver,
    trust_certificate: None,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    controller, mailbox = starttls_smtp
    env = {
        "ALERT_SMTP_HOST": "127.0.0.1",
        "ALERT_SMTP_PORT": str(controller.port),
        "ALERT_SMTP_USER": SMTP_USER,
        "ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
        "ALERT_SMTP_FROM": "alerts@example.org",
        "ALERT_SMTP_TO": "ops@example.org,oncall@example.org",
        "ALERT_SMTP_STARTTLS": "true",
        "ALERT_SLACK_WEBHOOK_URL": slack.url + SLACK_PATH,
        "ALERT_WEBHOOK_URL": webhook.url + "/alerts",
        "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    failures: list[str] = []
    channels = channels_of(env)
    with ChannelDispatcher(channels, retries=1, backoff=0.05, failure_counter=failures.append) as d:
        d.dispatch(["log", "email", "slack", "webhook"], notification())
        d.dispatch(["log", "email", "slack", "webhook"], notification("resolved"))
        assert d.flush(timeout=30)
        assert failures == []

    # E-mail: over STARTTLS, logged in, the right subject and body, in order.
    assert mailbox.logins == [("PLAIN", True)] * 2  # one session per message
    assert [m["Subject"] for _, m in mailbox.messages] == [
        "[WARNING] CeleryQueueBacklog: firing",
        "[WARNING] CeleryQueueBacklog: resolved",
    ]
    envelope, message = mailbox.messages[0]
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    assert message["From"] == "alerts@example.org"
    body = message.get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert body.startswith("[WARNING] CeleryQueueBacklog: firing\n\nqueue default holds 1500")
    assert "  queue_name: default" in body

    # Slack: the incoming-webhook JSON at the secret path.
    hits = slack.wait(2)
    assert [h.path for h in hits] == [SLACK_PATH, SLACK_PATH]
    payload = json.loads(hits[0].body)
    assert payload["text"].startswith("*[WARNING] CeleryQueueBacklog: firing*")
    assert payload["attachments"][0]["fields"][0] == {
        "title": "queue_name",
        "value": "default",
        "short": True,
    }

    # Webhook: verified by the receiver with the shared secret; the body is to_json().
    hits = webhook.wait(2)
    assert all(h.signature_valid for h in hits)
    assert json.loads(hits[0].body) == notification().to_json()
    assert [json.loads(h.body)["state"] for h in hits] == ["firing", "resolved"]

    assert any(r.name == "personal_assistant.workers.alerts" for r in all_logs.records)
    assert_no_secret_logged(all_logs)


def test_a_wrong_webhook_secret_fails_verification(
    webhook: Receiver, all_logs: pytest.LogCaptureFixture
) -> None:
    failures: list[str] = []
    wrong = channels_of(
        {
            "ALERT_WEBHOOK_URL": webhook.url + "/alerts",
            "ALERT_WEBHOOK_SECRET": "not-the-secret-but-long-enough-to-sign",
        }
    )
    with ChannelDispatcher(wrong, retries=2, backoff=0.01, failure_counter=failures.append) as d:
        d.dispatch(["webhook"], notification())
        assert d.flush(timeout=10)
    (hit,) = webhook.wait(1)  # 401 is not retried: one request
    assert not hit.signature_valid
    assert failures == ["webhook"]
    (final,) = [r for r in all_logs.records if r.levelno >= logging.ERROR]
    assert "answered HTTP 401: bad signature" in final.getMessage()
    assert_no_secret_logged(all_logs)


def test_a_refused_smtp_login_is_reported_without_the_password(
    starttls_smtp: tuple[LoopbackSMTP, Mailbox],
    certificate: Certificate,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    controller, mailbox = starttls_smtp
    failures: list[str] = []
    channel = EmailChannel(
        "127.0.0.1",
        controller.port,
        "alerts@example.org",
        ["ops@example.org"],
        username=SMTP_USER,
        password=SMTP_PASSWORD + "-wrong",
        starttls=True,
        ssl_context=certificate.client_context(),
    )
    with ChannelDispatcher(
        {"email": channel}, retries=3, backoff=0.01, failure_counter=failures.append
    ) as d:
        d.dispatch(["email"], notification())
        assert d.flush(timeout=10)
    # smtplib tries each mechanism the server offers (PLAIN, LOGIN) in the one session; the
    # refused login is not retried.
    assert mailbox.logins == [("PLAIN", False), ("LOGIN", False)]
    assert mailbox.messages == []
    assert failures == ["email"]
    (final,) = [r for r in all_logs.records if r.levelno >= logging.ERROR]
    assert "after 1 attempt(s)" in final.getMessage()
    assert "SMTP 535" in final.getMessage()
    assert_no_secret_logged(all_logs)


def test_an_untrusted_certificate_is_refused(
    starttls_smtp: tuple[LoopbackSMTP, Mailbox],
) -> None:
    controller, mailbox = starttls_smtp
    channel = EmailChannel(
        "127.0.0.1",
        controller.port,
        "alerts@example.org",
        ["ops@example.org"],
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        starttls=True,
    )
    with pytest.raises(ChannelError, match="certificate verify failed") as caught:
        channel.send(notification())
    assert not caught.value.retryable
    assert SMTP_PASSWORD not in str(caught.value)
    assert mailbox.logins == []  # the password never left the client


def test_smtp_over_implicit_tls(certificate: Certificate) -> None:
    mailbox = Mailbox(SMTP_USER, SMTP_PASSWORD)
    controller = LoopbackSMTP(mailbox, ssl_context=certificate.server_context())
    controller.start()
    try:
        EmailChannel(
            "127.0.0.1",
            controller.port,
            "alerts@example.org",
            ["ops@example.org"],
            use_ssl=True,
            ssl_context=certificate.client_context(),
        ).send(notification())
        assert mailbox.received.wait(10)
    finally:
        controller.stop()
    ((envelope, message),) = mailbox.messages
    assert message["Subject"] == "[WARNING] CeleryQueueBacklog: firing"
    assert envelope.rcpt_tos == ["ops@example.org"]


def test_an_smtp_login_without_tls_is_refused_before_the_password_leaves() -> None:
    """A server that offers AUTH without TLS would get the password as base64: the channel is
    never built, so no connection is made."""
    mailbox = Mailbox(SMTP_USER, SMTP_PASSWORD)
    controller = LoopbackSMTP(mailbox, auth_require_tls=False, authenticator=mailbox.authenticate)
    controller.start()
    try:
        env = {
            "ALERT_SMTP_HOST": "127.0.0.1",
            "ALERT_SMTP_PORT": str(controller.port),
            "ALERT_SMTP_USER": SMTP_USER,
            "ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
            "ALERT_SMTP_FROM": "alerts@example.org",
            "ALERT_SMTP_TO": "ops@example.org",
        }
        with pytest.raises(ConfigError) as caught:
            channels_of(env)
        with pytest.raises(ValueError, match="clear text"):
            EmailChannel(
                "127.0.0.1",
                controller.port,
                "alerts@example.org",
                ["ops@example.org"],
                username=SMTP_USER,
                password=SMTP_PASSWORD,
            )
    finally:
        controller.stop()
    assert str(caught.value) == (
        "invalid configuration: ALERT_SMTP_USER/ALERT_SMTP_PASSWORD need"
        " ALERT_SMTP_STARTTLS=true or ALERT_SMTP_SSL=true: without TLS the password would go"
        " out in clear text"
    )
    assert mailbox.logins == []
    assert mailbox.messages == []
