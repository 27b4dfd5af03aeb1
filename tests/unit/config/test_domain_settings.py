"""DomainSettings: the store, SMTP, calendar and AI variables, their checks and what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from personal_assistant.workers.config import load_settings
from tests.unit.config.support import HIDDEN, config_error


def test_the_store_defaults_to_a_sqlite_file_under_the_absolute_data_dir(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()

    assert settings.store_url == f"sqlite:///{Path.cwd() / 'var' / 'assistant.db'}"
    assert Path(settings.store_url.removeprefix("sqlite:///")).is_absolute()


def test_database_url_replaces_the_default_store(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", f"postgresql://app:{HIDDEN}@db:5432/assistant")

    settings = load_settings()

    assert settings.store_url == f"postgresql://app:{HIDDEN}@db:5432/assistant"
    assert HIDDEN not in repr(settings)


def test_a_database_url_of_another_kind_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, DATABASE_URL="mysql://root@db/assistant")

    assert "DATABASE_URL" in message
    assert "sqlite:/// or postgresql://" in message


def test_nothing_is_missing_once_every_domain_is_configured(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        smtp_host="smtp.example.com",
        email_from="assistant@example.com",
        calendar_feeds="work=https://cal.example.com/work.ics",
        ai_base_url="https://api.example.com/v1",
        ai_model="gpt-4o-mini",
    )

    assert settings.missing_settings() == {}
    assert settings.ai_model_url == "https://api.example.com/v1/chat/completions"


def test_missing_settings_names_each_domains_unset_variables(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(smtp_host="smtp.example.com", ai_model="llama3")

    assert settings.missing_settings() == {
        "email": ["EMAIL_FROM"],
        "sync": ["CALENDAR_FEEDS"],
        "ai": ["AI_BASE_URL"],
    }


def test_calendar_feeds_are_read_as_name_url_pairs(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(
        "CALENDAR_FEEDS", "work=https://cal.example.com/w.ics?token=x, home=http://h.lan/h.ics"
    )

    feeds = load_settings().calendar_feeds

    assert feeds == {
        "work": "https://cal.example.com/w.ics?token=x",
        "home": "http://h.lan/h.ics",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://cal.example.com/w.ics", "entries are name=url"),
        ("a=https://x.example/1.ics,a=https://x.example/2.ics", "named twice"),
        ("work=ftp://x.example/w.ics", "must be http(s)"),
        ("my feed=https://x.example/w.ics", "letters, digits"),
    ],
)
def test_a_bad_calendar_feed_is_refused_naming_the_variable(
    clean_env: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    message = config_error(clean_env, CALENDAR_FEEDS=value)

    assert "CALENDAR_FEEDS" in message
    assert expected in message


def test_an_smtp_login_without_tls_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(
        clean_env, SMTP_USERNAME="me", SMTP_PASSWORD=HIDDEN, SMTP_SECURITY="none"
    )

    assert "clear text" in message
    assert HIDDEN not in message


def test_an_smtp_username_needs_a_password(clean_env: pytest.MonkeyPatch) -> None:
    assert "SMTP_PASSWORD is required" in config_error(clean_env, SMTP_USERNAME="me")


@pytest.mark.parametrize(("security", "port"), [("starttls", 587), ("ssl", 465), ("none", 25)])
def test_the_smtp_port_defaults_to_the_usual_port_of_the_tls_mode(
    clean_env: pytest.MonkeyPatch, security: str, port: int
) -> None:
    clean_env.setenv("SMTP_SECURITY", security)

    assert load_settings().effective_smtp_port == port


def test_email_from_must_be_one_address(clean_env: pytest.MonkeyPatch) -> None:
    assert "EMAIL_FROM must be one" in config_error(clean_env, EMAIL_FROM="a@x.org,b@x.org")


def test_an_api_key_is_never_sent_over_plain_http_to_another_host(
    clean_env: pytest.MonkeyPatch,
) -> None:
    message = config_error(clean_env, AI_BASE_URL="http://models.lan:8000/v1", AI_API_KEY=HIDDEN)

    assert "AI_BASE_URL must be https" in message
    assert HIDDEN not in message


def test_a_local_model_server_may_use_plain_http(clean_env: pytest.MonkeyPatch) -> None:
    keyless = load_settings(ai_base_url="http://models.lan:8000/v1/")
    loopback = load_settings(ai_base_url="http://127.0.0.1:8000/v1", ai_api_key=HIDDEN)

    assert keyless.ai_base_url == "http://models.lan:8000/v1"
    assert loopback.ai_model_url == "http://127.0.0.1:8000/v1/chat/completions"


def test_secrets_of_the_domains_are_never_shown(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        smtp_host="smtp.example.com", smtp_username="me", smtp_password=HIDDEN, ai_api_key=HIDDEN
    )

    assert HIDDEN not in repr(settings)
    assert HIDDEN not in str(settings.safe_dict())
