"""The kombu guard: the app refuses a kombu whose internals the workflow outbox cannot use."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kombu
import pytest
from kombu.messaging import Producer
from kombu.transport import redis as kombu_redis

from personal_assistant.workers.broker import compat
from personal_assistant.workers.broker.compat import (
    CHANNEL_BATCH,
    KOMBU_REQUIREMENT,
    PRODUCER_BATCH,
    check_kombu,
    missing_kombu_features,
)
from personal_assistant.workers.config import ConfigError

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def refusal(monkeypatch: pytest.MonkeyPatch, version: str) -> str:
    """The one line the guard refuses a kombu reporting ``version`` with."""
    monkeypatch.setattr(kombu, "__version__", version)
    with pytest.raises(ConfigError) as caught:
        check_kombu()
    return str(caught.value)


# --- the installed kombu ---------------------------------------------------------------------


def test_the_installed_kombu_passes_the_guard() -> None:
    check_kombu()  # raises ConfigError on a refusal

    assert compat.version_supported(compat.installed_kombu_version())
    assert missing_kombu_features() == []


def test_the_guard_enforces_the_range_pyproject_declares() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    kombu_requirements = [r.replace(" ", "") for r in declared if r.startswith("kombu")]

    assert kombu_requirements == [KOMBU_REQUIREMENT]


# --- by version ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["5.5.4", "5.6.2", "5.8.0", "6.0.0", "4.6.11", "unknown"])
def test_a_kombu_outside_the_range_is_refused_naming_both_versions(
    monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    message = refusal(monkeypatch, version)

    assert f"kombu {version} is installed" in message
    assert f"needs {KOMBU_REQUIREMENT}" in message
    assert f"pip install '{KOMBU_REQUIREMENT}'" in message
    assert "\n" not in message


@pytest.mark.parametrize("version", ["5.7.0", "5.7.4", "5.7.0rc1"])
def test_every_release_of_the_supported_series_is_accepted(
    monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    monkeypatch.setattr(kombu, "__version__", version)

    check_kombu()  # raises ConfigError on a refusal

    assert compat.installed_kombu_version() == version


def test_the_range_includes_its_floor_and_excludes_its_ceiling() -> None:
    assert compat.version_supported("5.7")
    assert not compat.version_supported("5.8")
    assert not compat.version_supported("5.6.99")


# --- by feature ------------------------------------------------------------------------------


def publish_without_batch(self: Any, *args: Any, **kwargs: Any) -> Any:
    """kombu 5.6's ``Producer._publish``: straight onto the channel, whatever batch is set."""
    body, priority, content_type, content_encoding, headers, properties, routing_key = args[:7]
    exchange = args[9]
    channel = self.channel
    message = channel.prepare_message(
        body, priority, content_type, content_encoding, headers, properties
    )
    return channel.basic_publish(message, exchange=exchange, routing_key=routing_key)


def test_a_producer_that_publishes_past_its_batch_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Producer, "_publish", publish_without_batch)

    message = refusal(monkeypatch, "5.7.0")

    assert "kombu 5.7.0 is installed but lacks Producer._batch_local" in message
    assert KOMBU_REQUIREMENT in message
    assert CHANNEL_BATCH not in message


def test_a_producer_without_a_batch_slot_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original_init: Callable[..., None] = Producer.__init__

    def init_without_batch(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        del self._batch_local

    monkeypatch.setattr(Producer, "__init__", init_without_batch)

    assert missing_kombu_features() == [PRODUCER_BATCH]
    assert "lacks Producer._batch_local" in refusal(monkeypatch, "5.7.0")


def test_a_redis_channel_that_ignores_the_publish_batch_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def put_ignoring_batch(self: Any, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu 5.6's ``_put``: LPUSH at once, whatever batch is passed."""

    monkeypatch.setattr(kombu_redis.Channel, "_put", put_ignoring_batch)

    message = refusal(monkeypatch, "5.7.0")

    assert missing_kombu_features() == [CHANNEL_BATCH]
    assert "lacks the _publish_batch keyword of the Redis channel's _put" in message
    assert "\n" not in message


def test_the_feature_probe_opens_no_connection_and_leaves_no_batch_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[Producer] = []
    original_init: Callable[..., None] = Producer.__init__

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Producer, "__init__", recording_init)

    assert compat.producer_routes_into_batch()
    assert len(made) == 1
    assert isinstance(made[0].channel, compat._StandInChannel)  # never a real channel
    assert getattr(made[0]._batch_local, "current", None) is None
