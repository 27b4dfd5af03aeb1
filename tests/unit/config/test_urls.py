"""Broker and result backend URLs: typos caught at start-up, no password in the error, a
URL accepted is kept as given."""

from __future__ import annotations

import traceback

import pytest

from personal_assistant.workers.config import ConfigError, load_settings
from tests.unit.config.support import AWKWARD, HIDDEN, config_error


def test_an_unknown_scheme_lists_the_known_ones(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, CELERY_BROKER_URL="redsi://localhost:6379/0")

    assert "'redsi'" in message
    assert "'redis'" in message


@pytest.mark.parametrize(
    "url",
    [
        f"redis://alice:{HIDDEN}@cache.internal:abc/0",
        f"redsi://alice:{HIDDEN}@cache.internal:6379/0",
        f"redis://alice:{HIDDEN}@cache.internal:6379/zero",
        f"redis://:{HIDDEN}@:6379/0",
    ],
    ids=["bad-port", "unknown-scheme", "db-not-a-number", "no-host"],
)
def test_a_password_never_appears_in_a_config_error(
    clean_env: pytest.MonkeyPatch, url: str
) -> None:
    clean_env.setenv("CELERY_BROKER_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()

    printed = "".join(traceback.format_exception(caught.value))
    assert "CELERY_BROKER_URL" in str(caught.value)
    assert HIDDEN not in printed
    assert HIDDEN not in repr(caught.value.args)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{AWKWARD}@cache.internal:6379/0",
        f"redis://alice:{AWKWARD}@cache.internal:6379/0",
        "redis://alice:p@ss/w:rd@cache.internal/0",
    ],
    ids=["no-user", "user", "at-and-colon"],
)
def test_a_config_error_never_shows_a_password_holding_a_slash(
    clean_env: pytest.MonkeyPatch, url: str
) -> None:
    message = config_error(clean_env, CELERY_BROKER_URL=url)

    assert "CELERY_BROKER_URL" in message
    for fragment in ("pa/ss", "'pa'", "p@ss", "w:rd"):
        assert fragment not in message
    assert "****@" in message


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("celery_result_backend", "rpc://"),
        ("celery_broker_url", "memory://"),
        ("celery_result_backend", "db+sqlite:///results.db"),
    ],
)
def test_an_accepted_url_is_kept_as_it_was_given(
    clean_env: pytest.MonkeyPatch, field: str, url: str
) -> None:
    settings = load_settings(**{field: url})

    assert getattr(settings, field) == url
