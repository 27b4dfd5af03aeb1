"""Settings from the environment: defaults, one clear error per bad variable, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rich.pretty import pretty_repr

from personal_assistant.workers import constants as c
from personal_assistant.workers.config import (
    AlertChannelSettings,
    ConfigError,
    MaskSecretsFilter,
    get_settings,
    load_settings,
    mask_url,
)
from tests.support.worker import APP, worker_env

# The password the tests look for in everything that is printed or logged.
HIDDEN = "hunter2-s3cret"
URL_WITH_SECRET = f"redis://alice:{HIDDEN}@cache.internal:6380/1"


def config_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    """Set the variables, load the settings, and return the ConfigError's message."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


# --- defaults and reading the environment ----------------------------------------------------


def test_defaults_load_when_no_variable_is_set(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()

    assert settings.environment == "development"
    assert settings.celery_broker_url == "redis://localhost:6379/0"
    assert settings.worker_queue == list(c.QUEUES)
    assert settings.worker_concurrency == 2
    assert settings.task_time_limit == c.TASK_TIME_LIMIT_S
    assert settings.task_soft_time_limit == c.TASK_SOFT_TIME_LIMIT_S
    assert settings.max_countdown == c.MAX_COUNTDOWN_S
    assert settings.dlq_max_entries == c.DLQ_MAX_ENTRIES


def test_variables_are_read_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ENVIRONMENT", " Production ")
    clean_env.setenv("LOG_LEVEL", "debug")
    clean_env.setenv("WORKER_CONCURRENCY", "7")
    clean_env.setenv("CELERY_BROKER_URL", "redis://broker.internal:6379/3")
    clean_env.setenv("SCHEDULER_ENABLED", "false")

    settings = load_settings()

    assert settings.environment == "production"
    assert settings.log_level == "DEBUG"
    assert settings.worker_concurrency == 7
    assert settings.celery_broker_url == "redis://broker.internal:6379/3"
    assert settings.scheduler_enabled is False


def test_get_settings_reads_the_environment_again_after_cache_clear(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("WORKER_CONCURRENCY", "3")
    assert get_settings().worker_concurrency == 3

    clean_env.setenv("WORKER_CONCURRENCY", "4")
    assert get_settings().worker_concurrency == 3
    get_settings.cache_clear()
    assert get_settings().worker_concurrency == 4


def test_comma_separated_lists_are_split_and_trimmed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WORKER_QUEUE", "ai_tasks, email_tasks")
    clean_env.setenv("TEMP_DIRS", "/srv/tmp/a,/srv/tmp/b")
    clean_env.setenv("LOG_FILE_PATTERNS", "*.log, ,*.txt,")

    settings = load_settings()

    assert settings.worker_queue == ["ai_tasks", "email_tasks"]
    assert settings.temp_dirs == [Path("/srv/tmp/a"), Path("/srv/tmp/b")]
    assert settings.log_file_patterns == ["*.log", "*.txt"]


# --- each bad value stops start-up with a message naming the variable ------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENVIRONMENT", "prod"),
        ("WORKER_CONCURRENCY", "abc"),
        ("WORKER_CONCURRENCY", "0"),
        ("CELERY_BROKER_URL", "redis://localhost:abc/0"),
        ("CELERY_BROKER_URL", "redsi://localhost:6379/0"),
        ("CELERY_BROKER_URL", "redis://:6379/0"),
        ("CELERY_BROKER_URL", "redis://localhost:6379/zero"),
        ("CELERY_RESULT_BACKEND", "mongodb://localhost/results"),
        ("WORKER_QUEUE", "ai_tasks,bogus_tasks"),
        ("WORKER_QUEUE", ""),
    ],
    ids=[
        "environment-prod",
        "concurrency-abc",
        "concurrency-0",
        "broker-port-abc",
        "broker-unknown-scheme",
        "broker-missing-host",
        "broker-db-not-a-number",
        "backend-unknown-scheme",
        "queue-unknown",
        "queue-empty",
    ],
)
def test_a_bad_value_gives_a_one_line_config_error_naming_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    message = config_error(clean_env, **{variable: value})

    assert f"{variable}:" in message
    assert "\n" not in message


def test_an_unknown_queue_is_named_in_the_error(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, WORKER_QUEUE="ai_tasks,bogus_tasks")

    assert "bogus_tasks" in message
    assert "maintenance_tasks" in message  # the known queues are listed


def test_an_unknown_scheme_lists_the_known_ones(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, CELERY_BROKER_URL="redsi://localhost:6379/0")

    assert "'redsi'" in message
    assert "'redis'" in message


@pytest.mark.parametrize(("soft", "hard"), [("3600", "3600"), ("4000", "3600")])
def test_a_soft_time_limit_not_below_the_hard_limit_is_refused(
    clean_env: pytest.MonkeyPatch, soft: str, hard: str
) -> None:
    message = config_error(clean_env, TASK_SOFT_TIME_LIMIT=soft, TASK_TIME_LIMIT=hard)

    assert "TASK_SOFT_TIME_LIMIT" in message
    assert "TASK_TIME_LIMIT" in message


@pytest.mark.parametrize("visibility", ["3600", "1000"])
def test_a_visibility_timeout_not_above_the_time_limit_is_refused(
    clean_env: pytest.MonkeyPatch, visibility: str
) -> None:
    message = config_error(clean_env, VISIBILITY_TIMEOUT=visibility, TASK_TIME_LIMIT="3600")

    assert "VISIBILITY_TIMEOUT" in message


def test_a_visibility_timeout_above_every_wait_is_accepted(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VISIBILITY_TIMEOUT", "3601")

    assert load_settings().effective_visibility_timeout == 3601


def test_a_bad_value_in_the_cli_stops_celery_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    env = worker_env("redis://127.0.0.1:1/0", {"WORKER_CONCURRENCY": "abc"})

    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "inspect", "ping"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "WORKER_CONCURRENCY" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


# --- secrets ---------------------------------------------------------------------------------


def test_passwords_are_masked_in_repr_str_and_safe_dict(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        celery_broker_url=URL_WITH_SECRET, celery_result_backend=URL_WITH_SECRET
    )

    shown = [repr(settings), str(settings), f"{settings}", json.dumps(settings.safe_dict())]

    for text in shown:
        assert HIDDEN not in text
        assert "alice:****@cache.internal:6380" in text
    # Masking is for display only: the settings still hold the real URL to connect with.
    assert settings.celery_broker_url == URL_WITH_SECRET


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
    ("url", "masked"),
    [
        (URL_WITH_SECRET, "redis://alice:****@cache.internal:6380/1"),
        (f"redis://:{HIDDEN}@cache.internal:6379/0", "redis://:****@cache.internal:6379/0"),
        (f"amqp://guest:{HIDDEN}@rabbit:5672//", "amqp://guest:****@rabbit:5672//"),
        ("redis://cache.internal:6379/0", "redis://cache.internal:6379/0"),
        ("redis://alice@cache.internal:6379/0", "redis://alice@cache.internal:6379/0"),
    ],
)
def test_mask_url_hides_the_password_and_keeps_user_and_host(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_masks_every_url_in_a_longer_text() -> None:
    text = f"broker {URL_WITH_SECRET} backend redis://bob:other-pw@db:6379/2 done"

    assert mask_url(text) == (
        "broker redis://alice:****@cache.internal:6380/1 backend redis://bob:****@db:6379/2 done"
    )


def test_a_password_containing_an_at_sign_is_masked_whole() -> None:
    masked = mask_url("redis://alice:pa55@word@cache.internal:6379/0")

    assert "word" not in masked
    assert masked == "redis://alice:****@cache.internal:6379/0"


def test_rich_pretty_printing_of_settings_masks_the_password(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(celery_broker_url=URL_WITH_SECRET)

    assert HIDDEN not in pretty_repr(settings)


def test_the_log_filter_masks_a_url_logged_as_an_argument(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(MaskSecretsFilter())
    logger = logging.getLogger("tests.unit.config")

    with caplog.at_level(logging.INFO, logger="tests.unit.config"):
        logger.info("connecting to %s", URL_WITH_SECRET)
        logger.info("backend is %s too", URL_WITH_SECRET)

    assert HIDDEN not in caplog.text
    assert [r.getMessage() for r in caplog.records] == [
        "connecting to redis://alice:****@cache.internal:6380/1",
        "backend is redis://alice:****@cache.internal:6380/1 too",
    ]


def test_the_log_filter_leaves_other_records_untouched_and_never_drops_them() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("text",), None)

    assert MaskSecretsFilter().filter(record) is True
    assert record.msg == "plain %s"
    assert record.args == ("text",)


# A password holding the characters that end a URL's parts: urllib splits the authority at
# the first '/' or '?', and '@' and ':' also delimit userinfo.
AWKWARD = "pa/ss"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"redis://:{AWKWARD}@cache.internal:6379/0", "redis://:****@cache.internal:6379/0"),
        ("redis://user:p@ss/w:rd@cache.internal/0", "redis://user:****@cache.internal/0"),
        ("amqp://u:a/b?c@rabbit//", "amqp://u:****@rabbit//"),
        ("redis://alice:x:y/z@cache.internal:6379/0", "redis://alice:****@cache.internal:6379/0"),
        ("redis://alice:q?uery#frag@cache.internal/0", "redis://alice:****@cache.internal/0"),
    ],
    ids=["slash", "at-slash-colon", "slash-question", "colon-slash", "question-hash"],
)
def test_a_password_with_url_delimiters_is_masked_whole_and_user_and_host_stay(
    url: str, masked: str
) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=****"),
        (
            "redis://cache:6379/0?db=1&PASSWORD=s3cret&x=1",
            "redis://cache:6379/0?db=1&PASSWORD=****&x=1",
        ),
        ("amqp://rabbit//?pass=s3cret#top", "amqp://rabbit//?pass=****#top"),
        ("db+postgresql://db/app?Pwd=s3cret", "db+postgresql://db/app?Pwd=****"),
        ("connecting with redis_password=s3cret now", "connecting with redis_password=**** now"),
    ],
    ids=["password", "upper-case-among-others", "pass", "pwd", "in-a-log-line"],
)
def test_password_parameters_are_masked(text: str, masked: str) -> None:
    assert mask_url(text) == masked


def test_words_that_merely_end_in_pass_are_left_alone() -> None:
    assert mask_url("bypass=1 compass=north") == "bypass=1 compass=north"


# A guard, not a benchmark: this takes milliseconds; a backtracking pattern takes hours.
@pytest.mark.timeout(10)
def test_mask_url_stays_linear_on_a_megabyte_of_letters() -> None:
    text = "redis://" + "a" * 1_000_000

    assert mask_url(text) == text


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


def test_the_start_up_error_never_shows_a_password_holding_a_slash(tmp_path: Path) -> None:
    env = worker_env(f"redis://alice:{AWKWARD}@cache.internal:6379/0")

    proc = subprocess.run(
        [sys.executable, "-c", f"import {APP}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 2, proc.stderr
    assert "CELERY_BROKER_URL" in proc.stderr
    assert "redis://alice:****@cache.internal:6379/0" in proc.stderr
    for fragment in (AWKWARD, "'pa'", "ss@"):  # not even urllib's "... integer value as 'pa'"
        assert fragment not in proc.stderr


def log_through_masking_handler(emit: Callable[[logging.Logger], None]) -> str:
    """What a handler with the filter writes for the records ``emit`` logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskSecretsFilter())
    logger = logging.getLogger("tests.unit.config.masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    return stream.getvalue()


def test_the_log_filter_masks_the_traceback_of_a_logged_exception() -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            raise redis.ConnectionError(f"Error connecting to redis://:{HIDDEN}@cache:6379/0")
        except redis.ConnectionError:
            logger.exception("the broker is gone")

    written = log_through_masking_handler(emit)

    assert "Traceback" in written
    assert "redis.exceptions.ConnectionError: Error connecting to redis://:****@cache" in written
    assert HIDDEN not in written


def test_the_log_filter_masks_a_traceback_another_formatter_already_cached() -> None:
    try:
        raise ValueError(f"bad URL redis://u:{AWKWARD}@cache/0")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    record.exc_text = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]

    MaskSecretsFilter().filter(record)

    assert record.exc_text is not None
    assert AWKWARD not in record.exc_text
    assert "redis://u:****@cache/0" in record.exc_text
    assert AWKWARD not in logging.Formatter().format(record)


def test_the_log_filter_masks_the_stack_info() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "here", None, None)
    record.stack_info = f"Stack (most recent call last):\n  connect('{URL_WITH_SECRET}')"

    MaskSecretsFilter().filter(record)

    assert HIDDEN not in record.stack_info
    assert "connect('redis://alice:****@cache.internal:6380/1')" in record.stack_info


def test_the_log_filter_keeps_a_record_whose_arguments_do_not_fit_its_format() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d apples", ("many",), None)

    assert MaskSecretsFilter().filter(record) is True
    assert record.args == ("many",)


# --- derived values --------------------------------------------------------------------------


def test_the_derived_visibility_timeout_exceeds_the_time_limit_and_the_longest_countdown(
    clean_env: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings()
    longer = load_settings(task_time_limit=7200, task_soft_time_limit=7000, max_countdown=9000)

    assert defaults.effective_visibility_timeout > defaults.task_time_limit
    assert defaults.effective_visibility_timeout > defaults.max_countdown
    assert defaults.effective_visibility_timeout > defaults.retry_backoff_max
    assert longer.effective_visibility_timeout > 9000


def test_the_result_backend_defaults_to_the_broker_redis(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CELERY_BROKER_URL", URL_WITH_SECRET)

    settings = load_settings()

    assert settings.celery_result_backend == ""
    assert settings.result_backend_url == URL_WITH_SECRET


def test_an_explicit_result_backend_wins_over_the_broker(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        celery_broker_url="redis://broker:6379/0", celery_result_backend="redis://results:6379/5"
    )

    assert settings.result_backend_url == "redis://results:6379/5"


def test_a_non_redis_broker_without_a_backend_uses_rpc_results(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(celery_broker_url="amqp://guest:guest@rabbit:5672//")

    assert settings.result_backend_url == "rpc://"


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


def test_relative_paths_in_settings_resolve_against_the_starting_directory(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("DATA_DIR", "var")
    clean_env.setenv("TEMP_DIRS", "scratch,~/tmp")

    settings = load_settings()

    assert settings.data_dir == Path.cwd() / "var"
    assert settings.temp_dirs == [Path.cwd() / "scratch", Path.home().resolve() / "tmp"]
    assert settings.cleanup_log_roots == [Path.cwd() / "var" / "logs"]
    assert all(p.is_absolute() for p in settings.cleanup_temp_roots)


# --- alert channels (ALERT_*) ----------------------------------------------------------------

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
    env = worker_env(
        "redis://127.0.0.1:1/0",
        {"ALERT_SMTP_HOST": "smtp.example.org", "ALERT_SMTP_PORT": "70000"},
    )

    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "inspect", "ping"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "ALERT_SMTP_PORT: must be a port number 1-65535" in lines[0]
