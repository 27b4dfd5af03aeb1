"""ENVIRONMENT=production refuses to start without a Redis password, with DEBUG on, or with a
secret left at a placeholder, in one line naming each; other environments are not held to it."""

from __future__ import annotations

import pytest

from personal_assistant.workers.config import ConfigError, load_settings
from personal_assistant.workers.config.production import production_problems, url_password

pytestmark = pytest.mark.usefixtures("clean_env")

SAFE_BROKER = "redis://:k7Qp2-long-random@redis:6379/0"


def test_production_with_a_redis_password_and_debug_off_starts() -> None:
    settings = load_settings(environment="production", celery_broker_url=SAFE_BROKER)

    assert settings.environment == "production"


def test_production_names_every_missing_requirement_in_one_line() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            environment="production",
            celery_broker_url="redis://redis:6379/0",
            debug=True,
            ai_api_key="CHANGE_ME",
        )

    message = str(raised.value)
    assert "\n" not in message
    assert "ENVIRONMENT=production needs a password in CELERY_BROKER_URL" in message
    assert "DEBUG=false" in message
    assert "a real AI_API_KEY, not a placeholder" in message
    assert "CHANGE_ME" not in message  # the secret itself is never echoed


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"celery_result_backend": "redis://redis:6379/1"}, "a password in CELERY_RESULT_BACKEND"),
        ({"database_url": "postgresql://app:password@db/app"}, "a real password in DATABASE_URL"),
        ({"celery_broker_url": "redis://:changeme@redis:6379/0"}, "in CELERY_BROKER_URL, not a"),
        ({"smtp_password": "secret"}, "a real SMTP_PASSWORD"),
    ],
)
def test_each_production_requirement_is_named(fields: dict[str, str], named: str) -> None:
    settings = {"environment": "production", "celery_broker_url": SAFE_BROKER, **fields}

    with pytest.raises(ConfigError, match=named):
        load_settings(**settings)


def test_development_is_not_held_to_production_rules() -> None:
    settings = load_settings(celery_broker_url="redis://localhost:6379/0", debug=True)

    assert settings.debug


def test_a_unix_socket_redis_needs_no_password_and_unset_secrets_are_fine() -> None:
    problems = production_problems(
        urls={"CELERY_BROKER_URL": "unix:///run/redis.sock", "DATABASE_URL": ""},
        secrets={"AI_API_KEY": ""},
        debug=False,
    )

    assert problems == []


def test_a_url_password_is_read_decoded_and_absent_when_there_is_none() -> None:
    assert url_password("redis://:p%40ss@redis:6379/0") == "p@ss"
    assert url_password("redis://redis:6379/0") is None
