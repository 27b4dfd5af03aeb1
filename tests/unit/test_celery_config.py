"""Celery settings built from WorkerSettings: safe serialisation, delivery and priorities."""

from __future__ import annotations

from typing import Any

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.intake import CONSUMER_PATH
from personal_assistant.workers.broker.priority import PRIORITY_TRANSPORT_PATH
from personal_assistant.workers.broker.transport import TRANSPORT_PATH
from personal_assistant.workers.celery_config import build_celery_config
from personal_assistant.workers.config import ConfigError, is_redis_url, load_settings

pytestmark = pytest.mark.usefixtures("clean_env")

REDIS_URL = "redis://cache.internal:6379/0"
AMQP_URL = "amqp://guest:guest@rabbit:5672//"


def redis_config(**overrides: Any) -> dict[str, Any]:
    return build_celery_config(load_settings(celery_broker_url=REDIS_URL, **overrides))


def test_only_json_is_accepted_and_sent() -> None:
    config = redis_config()

    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["event_serializer"] == "json"
    every_value = repr(config).lower()
    assert "pickle" not in every_value
    assert "yaml" not in every_value


def test_tasks_are_acked_late_and_rejected_when_their_worker_is_lost() -> None:
    config = redis_config()

    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"task_time_limit": 7200, "task_soft_time_limit": 7000},
        {"max_countdown": 10_000},
        {"visibility_timeout": 5000},
    ],
    ids=["defaults", "long-time-limit", "long-countdown", "explicit"],
)
def test_the_visibility_timeout_is_the_same_for_broker_and_backend_and_above_every_wait(
    overrides: dict[str, Any],
) -> None:
    config = redis_config(**overrides)
    settings = load_settings(celery_broker_url=REDIS_URL, **overrides)

    broker = config["broker_transport_options"]["visibility_timeout"]
    backend = config["result_backend_transport_options"]["visibility_timeout"]
    assert broker == backend
    assert broker > config["task_time_limit"]
    assert broker > settings.max_countdown
    assert broker > settings.retry_backoff_max


def test_the_time_limits_come_from_the_settings() -> None:
    config = redis_config(task_time_limit=100, task_soft_time_limit=90)

    assert (config["task_time_limit"], config["task_soft_time_limit"]) == (100, 90)


def test_redis_gets_ten_priority_steps_served_by_priority() -> None:
    options = redis_config()["broker_transport_options"]

    assert options["priority_steps"] == list(range(10))
    assert options["queue_order_strategy"] == "priority"


def test_no_default_priority_overrides_the_queues_and_the_maximum_is_nine() -> None:
    config = redis_config()

    # Celery merges task_default_priority into each task's options, over the route's priority.
    assert "task_default_priority" not in config
    assert config["task_queue_max_priority"] == c.PRIORITY_MAX == 9


@pytest.mark.parametrize("url", [REDIS_URL, "rediss://:pw@cache.internal:6380/2"])
def test_a_redis_broker_uses_the_reliable_priority_transport(url: str) -> None:
    config = build_celery_config(load_settings(celery_broker_url=url))

    assert config["broker_transport"] == TRANSPORT_PATH
    assert config["broker_url"] == url


def test_the_reliable_fetch_can_be_switched_back_to_kombus_brpop() -> None:
    config = redis_config(broker_reliable_fetch=False)

    assert config["broker_transport"] == PRIORITY_TRANSPORT_PATH
    assert config["broker_transport_options"]["priority_steps"] == list(range(10))


def test_the_fetch_uses_the_workers_liveness_rule_and_the_message_size_limit() -> None:
    options = redis_config(
        worker_heartbeat_interval=2, worker_down_after=12, broker_max_message_bytes=65_536
    )["broker_transport_options"]

    assert options["consumer_beat_interval"] == 2
    assert options["consumer_dead_after"] == 12
    assert options["max_message_bytes"] == 65_536


def test_a_message_size_limit_below_a_kilobyte_is_refused() -> None:
    with pytest.raises(ConfigError, match="BROKER_MAX_MESSAGE_BYTES"):
        load_settings(broker_max_message_bytes=100)


def test_workers_reconnect_forever_and_screen_every_message() -> None:
    config = redis_config()

    assert config["broker_connection_max_retries"] is None
    assert config["worker_consumer"] == CONSUMER_PATH
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is True


def test_an_amqp_broker_keeps_its_own_transport_and_options() -> None:
    config = build_celery_config(load_settings(celery_broker_url=AMQP_URL))

    assert "broker_transport" not in config
    assert "broker_transport_options" not in config
    assert config["result_backend"] == "rpc://"


def test_task_events_are_off_by_default() -> None:
    config = redis_config()

    assert config["worker_send_task_events"] is False
    assert config["task_send_sent_event"] is False


def test_a_worker_reserves_one_message_per_process() -> None:
    assert redis_config()["worker_prefetch_multiplier"] == 1


def test_the_result_backend_is_the_broker_redis_by_default() -> None:
    assert redis_config()["result_backend"] == REDIS_URL


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h/0", True),
        ("rediss://h/0", True),
        ("amqp://h//", False),
        ("memory://", False),
        ("redis+socket:///tmp/r.sock", False),
    ],
)
def test_is_redis_url(url: str, expected: bool) -> None:
    assert is_redis_url(url) is expected
