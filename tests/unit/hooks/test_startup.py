"""A worker's start: a node name a live worker holds is refused in one line, a restart after a
crash is not, and the banner shows the broker URL as configured."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from personal_assistant.workers.hooks import startup
from personal_assistant.workers.hooks.startup import (
    EX_CANTCREAT,
    StartupHook,
    broker_line,
    fresh_heartbeat,
)
from personal_assistant.workers.monitoring.liveness import WorkerRegistry
from tests.support.apps import MakeApp

NODE = "local@host-1"


def beat(client: redis.Redis, node: str, *, pid: int = 4242, ago: float = 1.0) -> None:
    """A heartbeat of ``node`` ``ago`` seconds old, as MetricsHook's sends it."""
    WorkerRegistry(client).beat(node, queues=["ai_tasks"], pid=pid, now=time.time() - ago)


def starting_worker(node: str = NODE) -> Any:
    """What Celery hands worker_init: the worker, by its node name."""
    return SimpleNamespace(hostname=node)


def record_pings(monkeypatch: pytest.MonkeyPatch, *, answer: bool) -> list[str]:
    """Stand in for Celery's ping (the integration tests ping real workers): the names pinged,
    each answered with ``answer``."""
    pinged: list[str] = []

    def ping(app: object, node: str) -> bool:
        pinged.append(node)
        return answer

    monkeypatch.setattr(startup, "answers_ping", ping)
    return pinged


def test_a_fresh_heartbeat_under_the_name_is_found_and_a_stopped_or_old_one_is_not(
    redis_client: redis.Redis,
) -> None:
    registry = WorkerRegistry(redis_client, down_after=30)
    beat(redis_client, NODE)
    beat(redis_client, "celery@host-2", ago=120)  # silent for two minutes: down
    beat(redis_client, "celery@host-3")
    registry.forget("celery@host-3")  # shut down cleanly

    found = fresh_heartbeat(registry, NODE)
    assert found is not None
    assert found.pid == 4242
    assert fresh_heartbeat(registry, "celery@host-2") is None
    assert fresh_heartbeat(registry, "celery@host-3") is None
    assert fresh_heartbeat(registry, "other@host-1") is None


def test_a_name_held_by_a_worker_that_answers_ping_stops_the_start_with_one_line(
    make_app: MakeApp,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    beat(redis_client, NODE, ago=3)
    monkeypatch.setattr(startup, "answers_ping", lambda app, node: True)
    hook = StartupHook(make_app(celery_broker_url=redis_url))

    with pytest.raises(SystemExit) as stopped:
        hook.on_worker_init(sender=starting_worker())

    assert stopped.value.code == EX_CANTCREAT == 73
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert f"a worker named {NODE} is already up (pid 4242, up since 20" in lines[0]
    assert "-n NAME@%h" in lines[0]


def test_a_restart_after_a_crash_starts_though_the_dead_workers_heartbeat_is_fresh(
    make_app: MakeApp,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    beat(redis_client, NODE, ago=2)  # killed two seconds ago: nobody answers ping
    pinged = record_pings(monkeypatch, answer=False)
    hook = StartupHook(make_app(celery_broker_url=redis_url))

    hook.on_worker_init(sender=starting_worker())  # no SystemExit

    assert pinged == [NODE]


def test_a_name_nobody_holds_costs_no_ping(
    make_app: MakeApp, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinged = record_pings(monkeypatch, answer=True)
    hook = StartupHook(make_app(celery_broker_url=redis_url))

    hook.on_worker_init(sender=starting_worker())

    assert pinged == []


def test_a_broker_that_is_down_does_not_stop_the_start(make_app: MakeApp) -> None:
    hook = StartupHook(make_app(celery_broker_url="redis://127.0.0.1:1/0"))

    hook.on_worker_init(sender=starting_worker())  # no SystemExit: Redis checks report it


def test_the_banner_replaces_kombus_view_of_the_broker_with_the_url() -> None:
    def celery_banner(artlines: bool = True) -> str:
        return "transport:   Transport://:**@127.0.0.1:6390/0\nresults: redis://127.0.0.1:6390/0"

    shown = broker_line(
        celery_banner, "redis://127.0.0.1:6390/0", "Transport://:**@127.0.0.1:6390/0"
    )

    assert shown(artlines=False).splitlines()[0] == "transport:   redis://127.0.0.1:6390/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
        ("redis://:pa55word@127.0.0.1:6390/0", "redis://:****@127.0.0.1:6390/0"),
    ],
)
def test_the_worker_banner_shows_the_url_as_configured_with_a_password_masked(
    make_app: MakeApp, url: str, shown: str
) -> None:
    app = make_app(celery_broker_url=url)
    worker = SimpleNamespace(
        app=app,
        startup_info=lambda artlines=True: f".> transport:   {app.connection().as_uri()}",
    )

    StartupHook(app).on_worker_setup(instance=worker)

    banner = worker.startup_info()
    assert banner == f".> transport:   {shown}"
    assert "pa55word" not in banner


def test_the_name_check_is_registered_before_the_metrics_heartbeat(make_app: MakeApp) -> None:
    names = [hook.name for hook in make_app(metrics_enabled=True).hooks.hooks]

    assert "startup" in names
    assert names.index("startup") < names.index("metrics")
