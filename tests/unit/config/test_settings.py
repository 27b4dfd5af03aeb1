"""WorkerSettings: defaults, reading the environment, its own checks, masked display and
derived values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.pretty import pretty_repr

from personal_assistant.workers import constants as c
from personal_assistant.workers.config import get_settings, load_settings
from tests.unit.config.support import HIDDEN, URL_WITH_SECRET, config_error

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
    clean_env.setenv("CELERY_BROKER_URL", "redis://:k7Qp2-long-random@broker.internal:6379/3")
    clean_env.setenv("SCHEDULER_ENABLED", "false")

    settings = load_settings()

    assert settings.environment == "production"
    assert settings.log_level == "DEBUG"
    assert settings.worker_concurrency == 7
    assert settings.celery_broker_url == "redis://:k7Qp2-long-random@broker.internal:6379/3"
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


def test_an_unknown_queue_is_named_in_the_error(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, WORKER_QUEUE="ai_tasks,bogus_tasks")

    assert "bogus_tasks" in message
    assert "maintenance_tasks" in message  # the known queues are listed


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


def test_rich_pretty_printing_of_settings_masks_the_password(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(celery_broker_url=URL_WITH_SECRET)

    assert HIDDEN not in pretty_repr(settings)


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
