"""Alert channels built from the settings: which channels, with what, from the environment or
a ``.env`` file alike; secrets leave their SecretStr only for the channel that uses them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from personal_assistant.workers.alerting.channels.config import (
    channels_from_settings,
)
from personal_assistant.workers.alerting.channels.webhooks import (
    EmailChannel,
    LogChannel,
    SlackChannel,
    WebhookChannel,
    verify_signature,
)
from personal_assistant.workers.config import (
    AlertChannelSettings,
    ConfigError,
    load_settings,
)

SMTP_PASSWORD = "pw-never-shown"  # noqa: S105 - a test secret
SECRET = "unit-test-webhook-secret-0123456789abcdef"  # noqa: S105 - a test secret (41 bytes)
SLACK_TOKEN = "XXXXXXXXXXXXXXXXXXXXXXXX"  # noqa: S105 - a test token
FULL_ENV = {
    "ALERT_SMTP_HOST": "smtp.example.org",
    "ALERT_SMTP_USER": "alerts",
    "ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
    "ALERT_SMTP_FROM": "alerts@example.org",
    "ALERT_SMTP_TO": "ops@example.org, oncall@example.org",
    "ALERT_SMTP_STARTTLS": "true",
    "ALERT_SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/T000/B000/{SLACK_TOKEN}",
    "ALERT_WEBHOOK_URL": "https://hooks.example.org/alerts",
    "ALERT_WEBHOOK_SECRET": SECRET,
}
ALERT_VARIABLES = [AlertChannelSettings.variable(f) for f in AlertChannelSettings.model_fields]


@pytest.fixture
def no_alert_variables(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The clean environment, without any ALERT_* variable either."""
    for name in ALERT_VARIABLES:
        clean_env.delenv(name, raising=False)
    return clean_env


def test_only_the_log_channel_is_built_without_configuration() -> None:
    channels = channels_from_settings(AlertChannelSettings())

    assert list(channels) == ["log"]
    assert isinstance(channels["log"], LogChannel)


def test_blank_variables_count_as_unset() -> None:
    settings = AlertChannelSettings.from_variables(
        {"ALERT_SMTP_HOST": "", "ALERT_WEBHOOK_SECRET": " ", "ALERT_CHANNEL_TIMEOUT": ""}
    )

    assert list(channels_from_settings(settings)) == ["log"]
    assert settings.channel_timeout == 5.0


def test_every_channel_is_built_from_full_settings() -> None:
    channels = channels_from_settings(AlertChannelSettings.from_variables(FULL_ENV))

    assert list(channels) == ["log", "email", "slack", "webhook"]
    email = channels["email"]
    assert isinstance(email, EmailChannel)
    assert (email.host, email.port, email.starttls) == ("smtp.example.org", 587, True)
    assert email.recipients == ("ops@example.org", "oncall@example.org")
    assert email.username == "alerts"
    assert isinstance(channels["slack"], SlackChannel)
    assert isinstance(channels["webhook"], WebhookChannel)
    shown = " ".join(repr(channel) for channel in channels.values())
    for secret in (SMTP_PASSWORD, SECRET, SLACK_TOKEN):
        assert secret not in shown


def test_the_webhook_channel_signs_with_the_configured_secret() -> None:
    channel = channels_from_settings(AlertChannelSettings.from_variables(FULL_ENV))["webhook"]
    assert isinstance(channel, WebhookChannel)
    body, now = b'{"rule":"r"}', int(time.time())

    signature = channel.sign(body, now)

    assert verify_signature(body, signature, SECRET, str(now))


def test_the_channel_timeout_reaches_every_channel() -> None:
    settings = AlertChannelSettings.from_variables(FULL_ENV | {"ALERT_CHANNEL_TIMEOUT": "2.5"})

    channels = channels_from_settings(settings)

    email, slack, webhook = channels["email"], channels["slack"], channels["webhook"]
    assert isinstance(email, EmailChannel) and isinstance(slack, SlackChannel)
    assert isinstance(webhook, WebhookChannel)
    assert (email.timeout, slack.timeout, webhook.timeout) == (2.5, 2.5, 2.5)


@pytest.mark.parametrize(
    ("tls", "port"),
    [({}, 25), ({"ALERT_SMTP_SSL": "yes"}, 465), ({"ALERT_SMTP_PORT": "2525"}, 2525)],
)
def test_the_smtp_port_defaults_to_the_usual_port_of_the_tls_mode(
    tls: dict[str, str], port: int
) -> None:
    base = {"ALERT_SMTP_HOST": "h", "ALERT_SMTP_FROM": "a@b.c", "ALERT_SMTP_TO": "d@e.f"}

    email = channels_from_settings(AlertChannelSettings.from_variables(base | tls))["email"]

    assert isinstance(email, EmailChannel)
    assert email.port == port


@pytest.mark.parametrize("tls", [{"ALERT_SMTP_STARTTLS": "true"}, {"ALERT_SMTP_SSL": "true"}])
def test_an_smtp_login_over_tls_is_accepted(tls: dict[str, str]) -> None:
    env = {k: v for k, v in FULL_ENV.items() if k != "ALERT_SMTP_STARTTLS"} | tls

    email = channels_from_settings(AlertChannelSettings.from_variables(env))["email"]

    assert isinstance(email, EmailChannel)
    assert email.username == "alerts"


def test_a_mapping_of_variables_builds_the_same_channels() -> None:
    channels = channels_from_settings(AlertChannelSettings.from_variables(FULL_ENV))

    assert list(channels) == ["log", "email", "slack", "webhook"]
    with pytest.raises(ConfigError, match="ALERT_SMTP_PORT"):
        AlertChannelSettings.from_variables(FULL_ENV | {"ALERT_SMTP_PORT": "70000"})


def test_alert_settings_from_a_dotenv_file_reach_the_channels(
    no_alert_variables: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dotenv = tmp_path / "alerts.env"
    dotenv.write_text(
        "ALERT_SMTP_HOST=smtp.from-file.example\n"
        "ALERT_SMTP_PORT=2587\n"
        "ALERT_SMTP_FROM=alerts@from-file.example\n"
        "ALERT_SMTP_TO=ops@from-file.example,oncall@from-file.example\n"
        "ALERT_SMTP_STARTTLS=true\n"
        "ALERT_SMTP_USER=file-user\n"
        f"ALERT_SMTP_PASSWORD={SMTP_PASSWORD}\n"
        "ALERT_WEBHOOK_URL=https://hooks.from-file.example:8443/alerts\n"
        f"ALERT_WEBHOOK_SECRET={SECRET}\n"
    )

    settings = load_settings(_env_file=dotenv)
    channels = channels_from_settings(settings.alert_channels)

    email = channels["email"]
    assert isinstance(email, EmailChannel)
    assert (email.host, email.port) == ("smtp.from-file.example", 2587)
    assert email.sender == "alerts@from-file.example"
    assert email.recipients == ("ops@from-file.example", "oncall@from-file.example")
    assert email.username == "file-user"
    webhook = channels["webhook"]
    assert isinstance(webhook, WebhookChannel)
    assert settings.alert_channels.webhook_url == "https://hooks.from-file.example:8443/alerts"
    assert webhook.endpoint == "https://hooks.from-file.example:8443/****"


def test_a_dotenv_file_in_the_working_directory_is_read_and_the_environment_wins(
    no_alert_variables: pytest.MonkeyPatch,
) -> None:
    # clean_env runs the test in an empty directory of its own.
    Path(".env").write_text(
        "ALERT_SMTP_HOST=smtp.from-file.example\n"
        "ALERT_SMTP_FROM=alerts@from-file.example\n"
        "ALERT_SMTP_TO=ops@from-file.example\n"
    )
    no_alert_variables.setenv("ALERT_SMTP_HOST", "smtp.from-env.example")

    email = channels_from_settings(load_settings().alert_channels)["email"]

    assert isinstance(email, EmailChannel)
    assert email.host == "smtp.from-env.example"
    assert email.sender == "alerts@from-file.example"


def test_alert_channels_given_as_an_argument_win_over_the_environment(
    no_alert_variables: pytest.MonkeyPatch,
) -> None:
    no_alert_variables.setenv("ALERT_SLACK_WEBHOOK_URL", "https://hooks.slack.com/from/env")
    given = AlertChannelSettings(
        webhook_url="https://hooks.example.org/a", webhook_secret=SecretStr(SECRET)
    )

    settings = load_settings(alert_channels=given)

    assert settings.alert_channels == given
    assert list(channels_from_settings(settings.alert_channels)) == ["log", "webhook"]
