"""Alert channel settings: read from the flat ALERT_* variables, each bad one refused with
one line naming it, the secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.pretty import pretty_repr

from personal_assistant.workers.config import AlertChannelSettings, ConfigError, load_settings
from tests.unit.config.support import celery_start_errors

SMTP_PASSWORD = "smtp-pw-never-shown"  # noqa: S105 - a test secret
WEBHOOK_SECRET = "webhook-secret-never-shown-0123456789"  # noqa: S105 - a test secret (37 bytes)
SLACK_TOKEN = "slacktok3nneverShown"  # noqa: S105 - a test token
ALERTS = {
    "ALERT_SMTP_HOST": "smtp.example.org",
    "ALERT_SMTP_FROM": "alerts@example.org",
    "ALERT_SMTP_TO": "ops@example.org, oncall@example.org",
    "ALERT_SMTP_STARTTLS": "true",
    "ALERT_SMTP_USER": "alerts",
    "ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
    "ALERT_SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/T0/B0/{SLACK_TOKEN}",
    "ALERT_WEBHOOK_URL": "https://hooks.example.org/alerts",
    "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
}
ALERT_SECRETS = (SMTP_PASSWORD, WEBHOOK_SECRET, SLACK_TOKEN)


@pytest.fixture
def alert_env(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The clean environment, without ALERT_* variables either (they are not fields of
    WorkerSettings itself, so clean_env leaves them)."""
    for field in AlertChannelSettings.model_fields:
        clean_env.delenv(AlertChannelSettings.variable(field), raising=False)
    return clean_env


def alert_config_error(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> str:
    """Load the settings with ``variables`` and return the ConfigError's message."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_alert_channel_settings_are_read_from_the_flat_alert_variables(
    alert_env: pytest.MonkeyPatch,
) -> None:
    for name, value in (ALERTS | {"ALERT_CHANNEL_TIMEOUT": "2.5"}).items():
        alert_env.setenv(name, value)

    channels = load_settings().alert_channels

    assert channels.smtp_host == "smtp.example.org"
    assert channels.smtp_to == ("ops@example.org", "oncall@example.org")
    assert channels.smtp_starttls and not channels.smtp_ssl
    assert channels.email_port == 587
    assert channels.smtp_password is not None
    assert channels.smtp_password.get_secret_value() == SMTP_PASSWORD
    assert channels.webhook_url == "https://hooks.example.org/alerts"
    assert channels.channel_timeout == 2.5


def test_no_alert_variable_means_no_alert_channel_configured(
    alert_env: pytest.MonkeyPatch,
) -> None:
    channels = load_settings().alert_channels

    assert channels == AlertChannelSettings()
    assert channels.smtp_host is None and channels.webhook_url is None


BAD_ALERT_SETTINGS = [
    # (id, variables beyond ALERTS (None: leave it out), the variable named, words of the reason)
    ("port-out-of-range", {"ALERT_SMTP_PORT": "70000"}, "ALERT_SMTP_PORT", "port number 1-65535"),
    ("port-not-a-number", {"ALERT_SMTP_PORT": "smtp"}, "ALERT_SMTP_PORT", "port number"),
    (
        "user-without-password",
        {"ALERT_SMTP_PASSWORD": None},
        "ALERT_SMTP_PASSWORD",
        "required when ALERT_SMTP_USER",
    ),
    (
        "password-without-user",
        {"ALERT_SMTP_USER": None},
        "ALERT_SMTP_USER",
        "required when ALERT_SMTP_PASSWORD",
    ),
    ("login-without-tls", {"ALERT_SMTP_STARTTLS": "false"}, "ALERT_SMTP_STARTTLS", "clear text"),
    ("starttls-and-ssl", {"ALERT_SMTP_SSL": "true"}, "ALERT_SMTP_SSL", "exclude each other"),
    (
        "flag-not-a-boolean",
        {"ALERT_SMTP_STARTTLS": "maybe"},
        "ALERT_SMTP_STARTTLS",
        "true or false",
    ),
    ("bad-sender", {"ALERT_SMTP_FROM": "alerts"}, "ALERT_SMTP_FROM", "e-mail addresses"),
    (
        "bad-recipient",
        {"ALERT_SMTP_TO": "ops@example.org, oncall"},
        "ALERT_SMTP_TO",
        "e-mail addresses",
    ),
    ("no-recipient", {"ALERT_SMTP_TO": " , "}, "ALERT_SMTP_TO", "required for e-mail alerts"),
    ("no-host", {"ALERT_SMTP_HOST": None}, "ALERT_SMTP_HOST", "required for e-mail alerts"),
    (
        "slack-over-http",
        {"ALERT_SLACK_WEBHOOK_URL": f"http://hooks.slack.com/x/{SLACK_TOKEN}"},
        "ALERT_SLACK_WEBHOOK_URL",
        "must be https",
    ),
    (
        "webhook-not-http",
        {"ALERT_WEBHOOK_URL": "ftp://example.org/x"},
        "ALERT_WEBHOOK_URL",
        "must be https",
    ),
    (
        "short-webhook-secret",
        {"ALERT_WEBHOOK_SECRET": "only-twenty-one-bytes"},
        "ALERT_WEBHOOK_SECRET",
        "at least 32 bytes",
    ),
    (
        "secret-without-url",
        {"ALERT_WEBHOOK_URL": None},
        "ALERT_WEBHOOK_URL",
        "required when ALERT_WEBHOOK_SECRET",
    ),
    (
        "url-without-secret",
        {"ALERT_WEBHOOK_SECRET": None},
        "ALERT_WEBHOOK_SECRET",
        "required when ALERT_WEBHOOK_URL",
    ),
    ("timeout-not-positive", {"ALERT_CHANNEL_TIMEOUT": "-1"}, "ALERT_CHANNEL_TIMEOUT", "positive"),
    ("timeout-not-a-number", {"ALERT_CHANNEL_TIMEOUT": "soon"}, "ALERT_CHANNEL_TIMEOUT", "seconds"),
]


@pytest.mark.parametrize(
    ("change", "variable", "reason"),
    [case[1:] for case in BAD_ALERT_SETTINGS],
    ids=[case[0] for case in BAD_ALERT_SETTINGS],
)
def test_a_bad_alert_setting_is_refused_with_one_line_naming_the_variable(
    alert_env: pytest.MonkeyPatch, change: dict[str, str | None], variable: str, reason: str
) -> None:
    variables = {k: v for k, v in (ALERTS | change).items() if v is not None}

    message = alert_config_error(alert_env, variables)

    assert variable in message
    assert reason in message
    assert "\n" not in message
    for secret in ALERT_SECRETS:
        assert secret not in message


def test_an_smtp_login_without_tls_names_every_variable_involved(
    alert_env: pytest.MonkeyPatch,
) -> None:
    variables = {k: v for k, v in ALERTS.items() if k != "ALERT_SMTP_STARTTLS"}

    message = alert_config_error(alert_env, variables)

    assert message == (
        "invalid configuration: ALERT_SMTP_USER/ALERT_SMTP_PASSWORD need"
        " ALERT_SMTP_STARTTLS=true or ALERT_SMTP_SSL=true: without TLS the password would go"
        " out in clear text"
    )


def test_a_bad_field_value_is_shown_but_a_bad_secret_or_webhook_url_is_not(
    alert_env: pytest.MonkeyPatch,
) -> None:
    message = alert_config_error(
        alert_env,
        ALERTS
        | {
            "ALERT_SMTP_PORT": "70000",
            "ALERT_WEBHOOK_SECRET": "short-secret-17b",
            "ALERT_SLACK_WEBHOOK_URL": f"http://hooks.slack.com/x/{SLACK_TOKEN}",
        },
    )

    assert "ALERT_SMTP_PORT: must be a port number 1-65535 (got '70000')" in message
    assert "ALERT_SLACK_WEBHOOK_URL: Slack webhook: URL http://hooks.slack.com/**** must" in message
    assert "short-secret-17b" not in message
    assert SLACK_TOKEN not in message


def test_repr_str_and_safe_dict_never_show_the_alert_secrets(
    alert_env: pytest.MonkeyPatch,
) -> None:
    for name, value in ALERTS.items():
        alert_env.setenv(name, value)
    settings = load_settings()

    shown = [
        repr(settings),
        str(settings),
        json.dumps(settings.safe_dict()),
        repr(settings.alert_channels),
        str(settings.alert_channels),
        pretty_repr(settings),
        pretty_repr(settings.alert_channels),
    ]

    for text in shown:
        for secret in ALERT_SECRETS:
            assert secret not in text
        assert "https://hooks.slack.com/****" in text
    assert settings.safe_dict()["alert_channels"]["smtp_user"] == "alerts"


def test_a_bad_alert_setting_stops_the_cli_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    code, lines, _ = celery_start_errors(
        tmp_path, {"ALERT_SMTP_HOST": "smtp.example.org", "ALERT_SMTP_PORT": "70000"}
    )

    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "ALERT_SMTP_PORT: must be a port number 1-65535" in lines[0]
