"""The broker safety check: what a Redis that would lose or evict tasks is told at start-up."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker import safety
from personal_assistant.workers.broker.safety import (
    EXIT_CONFIG,
    BrokerSafetyHook,
    Findings,
    RedisFacts,
    assess,
)
from personal_assistant.workers.celery_app import WorkerApp, create_app
from personal_assistant.workers.config import load_settings
from tests.support.redis_server import RedisServer, free_port

SAFE = RedisFacts(version=(7, 2), aof_enabled=True, maxmemory_policy="noeviction")

MakeApp = Callable[..., WorkerApp]


def facts(**changes: Any) -> RedisFacts:
    values: dict[str, Any] = {
        "version": SAFE.version,
        "aof_enabled": SAFE.aof_enabled,
        "maxmemory_policy": SAFE.maxmemory_policy,
    }
    values.update(changes)
    return RedisFacts(**values)


# --- assess ----------------------------------------------------------------------------------


def test_a_persistent_non_evicting_recent_redis_has_no_findings() -> None:
    assert assess(SAFE) == Findings(fatal=[], risky=[])


@pytest.mark.parametrize("version", [(6, 2), (5, 0), (0,)])
def test_a_redis_older_than_7_is_fatal_for_the_reliable_fetch(version: tuple[int, ...]) -> None:
    found = assess(facts(version=version))

    assert found.risky == []
    [problem] = found.fatal
    assert f"Redis {'.'.join(map(str, version))} is older than 7.0" in problem
    assert "upgrade Redis" in problem


def test_an_old_redis_is_acceptable_without_the_reliable_fetch() -> None:
    assert assess(facts(version=(6, 2)), reliable_fetch=False) == Findings(fatal=[], risky=[])


def test_the_oldest_supported_redis_is_not_fatal() -> None:
    assert assess(facts(version=c.REDIS_MIN_VERSION)).fatal == []


def test_a_redis_without_aof_is_risky_and_says_how_to_fix_it() -> None:
    found = assess(facts(aof_enabled=False))

    assert found.fatal == []
    [problem] = found.risky
    assert "appendonly no" in problem
    assert "set appendonly yes" in problem


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random"])
def test_an_evicting_redis_is_risky_and_names_its_policy(policy: str) -> None:
    found = assess(facts(maxmemory_policy=policy))

    assert found.fatal == []
    [problem] = found.risky
    assert f"maxmemory-policy {policy}" in problem
    assert "set maxmemory-policy noeviction" in problem


def test_every_problem_of_a_redis_is_reported_at_once() -> None:
    found = assess(RedisFacts(version=(6, 0), aof_enabled=False, maxmemory_policy="allkeys-lru"))

    assert len(found.fatal) == 1
    assert len(found.risky) == 2


# --- RedisFacts.read -------------------------------------------------------------------------


def test_the_facts_of_the_test_redis_are_read_from_info(redis_client: redis.Redis) -> None:
    read = RedisFacts.read(redis_client)

    # The test server runs with appendonly no and the default noeviction policy.
    assert read.version >= (7, 0)
    assert len(read.version) == 2
    assert read.aof_enabled is False
    assert read.maxmemory_policy == "noeviction"
    assert assess(read).fatal == []


def test_a_policy_change_on_the_server_shows_in_its_facts(redis_client: redis.Redis) -> None:
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        assert RedisFacts.read(redis_client).maxmemory_policy == "allkeys-lru"
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")


# --- the hook at worker start ----------------------------------------------------------------


# Production requires a password in every Redis URL (config/production.py).
TEST_REDIS_PASSWORD = "k7Qp2-" + "long-random"


@pytest.fixture
def secured_redis_url(tmp_path: Path) -> Iterator[str]:
    """A private Redis that requires a password (no AOF), as a production worker may meet."""
    server = RedisServer(tmp_path / "redis", password=TEST_REDIS_PASSWORD).start()
    yield server.url
    server.stop()


@pytest.fixture
def make_app(clean_env: pytest.MonkeyPatch, secured_redis_url: str) -> Iterator[MakeApp]:
    """Apps like the worker's, on the test Redis unless told otherwise; closed afterwards."""
    apps: list[WorkerApp] = []

    def make(environment: str, broker_url: str = secured_redis_url) -> WorkerApp:
        settings = load_settings(
            celery_broker_url=broker_url,
            celery_result_backend=secured_redis_url,
            environment=environment,
        )
        app = create_app(settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def safety_hook(app: WorkerApp) -> BrokerSafetyHook:
    """The safety hook the app registered for itself."""
    [hook] = [h for h in app.hooks.hooks if isinstance(h, BrokerSafetyHook)]
    return hook


def test_outside_production_a_redis_without_aof_is_a_warning(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = safety_hook(make_app("test"))

    with caplog.at_level(logging.WARNING, logger=safety.__name__):
        hook.on_worker_init(sender=None)

    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "appendonly" in record.getMessage()
    assert capsys.readouterr().err == ""


def test_in_production_a_redis_without_aof_stops_the_worker_with_one_line(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = safety_hook(make_app("production"))

    with (
        caplog.at_level(logging.WARNING, logger=safety.__name__),
        pytest.raises(SystemExit) as stopped,
    ):
        hook.on_worker_init(sender=None)

    assert stopped.value.code == EXIT_CONFIG == 78
    err = capsys.readouterr().err
    assert err.startswith("personal_assistant.workers: ")
    assert err.count("\n") == 1
    assert err.endswith("\n")
    assert "appendonly" in err
    assert caplog.records == []  # the one line is the whole report


def test_an_unreachable_broker_is_a_warning_without_a_verdict(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"redis://:{TEST_REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    hook = safety_hook(make_app("production", broker_url=nobody))

    with caplog.at_level(logging.WARNING, logger=safety.__name__):
        hook.on_worker_init(sender=None)

    [record] = caplog.records
    assert "could not check the broker" in record.getMessage()


def test_a_broker_that_is_not_redis_is_not_checked(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = safety_hook(make_app("production", broker_url="amqp://guest@127.0.0.1:1//"))

    with caplog.at_level(logging.DEBUG, logger=safety.__name__):
        hook.on_worker_init(sender=None)

    assert caplog.records == []
    assert capsys.readouterr().err == ""
