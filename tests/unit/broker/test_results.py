"""The result backend's one-round-trip store, on a real Redis: Celery's bytes, Celery's rules."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend

from personal_assistant.workers.broker.results import LeanRedisBackend, backend_class_for
from personal_assistant.workers.celery_app import WorkerApp, create_app
from personal_assistant.workers.config import load_settings
from tests.support.waiting import wait_for


@pytest.fixture
def app(redis_url: str) -> Iterator[WorkerApp]:
    """An app on the private Redis, with this project's backend."""
    made = create_app(load_settings(celery_broker_url=redis_url, celery_result_backend=redis_url))
    yield made
    made.close()


def stored(client: redis.Redis, backend: Any, task_id: str) -> dict[str, Any]:
    raw = client.get(backend.get_key_for_task(task_id))
    assert raw is not None
    return dict(json.loads(raw))


def test_the_app_stores_results_through_the_lean_backend(app: WorkerApp) -> None:
    assert type(app.backend) is LeanRedisBackend


def test_a_state_is_stored_as_celerys_own_backend_stores_it(
    app: WorkerApp, redis_client: redis.Redis, redis_url: str
) -> None:
    celerys = RedisBackend(app=app, url=redis_url)
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    app.backend.mark_as_done(ours, {"answer": [1, 2]})
    celerys.mark_as_done(theirs, {"answer": [1, 2]})

    mine, celery_meta = (
        stored(redis_client, app.backend, ours),
        stored(redis_client, celerys, theirs),
    )
    for meta in (mine, celery_meta):
        del meta["task_id"], meta["date_done"]
    assert mine == celery_meta
    ttl = redis_client.ttl(app.backend.get_key_for_task(ours))
    assert 0 < ttl <= app.backend.expires
    assert abs(ttl - redis_client.ttl(celerys.get_key_for_task(theirs))) <= 1


def test_a_success_is_never_overwritten_by_a_later_state(
    app: WorkerApp, redis_client: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    app.backend.mark_as_done(task_id, 42)
    # A lost worker's redelivery of the same task, starting and failing late:
    app.backend.store_result(task_id, {"pid": 1}, states.STARTED)
    app.backend.mark_as_failure(task_id, RuntimeError("late"))

    meta = stored(redis_client, app.backend, task_id)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 42)


def test_states_before_success_are_replaced_in_turn(
    app: WorkerApp, redis_client: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, {"pid": 1}, states.STARTED)
    assert stored(redis_client, app.backend, task_id)["status"] == states.STARTED
    app.backend.mark_as_retry(task_id, RuntimeError("again"))
    assert stored(redis_client, app.backend, task_id)["status"] == states.RETRY
    app.backend.mark_as_done(task_id, "ok")
    assert stored(redis_client, app.backend, task_id)["status"] == states.SUCCESS


def test_a_value_that_is_not_a_result_is_overwritten(
    app: WorkerApp, redis_client: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    redis_client.set(app.backend.get_key_for_task(task_id), b"\x80 not json")
    app.backend.mark_as_done(task_id, 1)
    assert stored(redis_client, app.backend, task_id)["status"] == states.SUCCESS


def test_a_result_kept_forever_has_no_expiry(redis_url: str, redis_client: redis.Redis) -> None:
    settings = load_settings(celery_broker_url=redis_url, celery_result_backend=redis_url)
    app = create_app(settings)
    app.conf.result_expires = None
    app.backend.expires = None  # as Celery reads result_expires=None: keep results
    task_id = str(uuid.uuid4())
    app.backend.mark_as_done(task_id, 1)
    assert redis_client.ttl(app.backend.get_key_for_task(task_id)) == -1
    app.close()


def test_each_stored_state_is_published_on_the_tasks_channel(
    app: WorkerApp, redis_client: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    pubsub = redis_client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(app.backend.get_key_for_task(task_id))
    assert pubsub.get_message(timeout=1) is not None  # the subscribe confirmation

    app.backend.mark_as_done(task_id, "published")

    message = pubsub.get_message(timeout=2)
    assert message is not None
    assert json.loads(message["data"])["result"] == "published"
    pubsub.close()


def test_publishing_a_task_subscribes_to_nothing(app: WorkerApp, redis_client: redis.Redis) -> None:
    result = app.send_task("tests.noop", queue="file_tasks")

    assert redis_client.pubsub_numsub(app.backend.get_key_for_task(result.id))[0][1] == 0
    assert redis_client.pubsub_channels() == []


def test_get_returns_a_result_stored_before_anyone_waited(app: WorkerApp) -> None:
    result = app.send_task("tests.noop", queue="file_tasks")
    app.backend.mark_as_done(result.id, "done early")

    assert result.get(timeout=5) == "done early"


def test_get_waits_for_a_result_stored_while_it_waits(app: WorkerApp) -> None:
    result = app.send_task("tests.noop", queue="file_tasks")
    timer = threading.Timer(0.3, app.backend.mark_as_done, (result.id, "done later"))
    timer.start()

    assert result.get(timeout=5) == "done later"
    timer.join()


def test_a_then_callback_fires_for_a_result_stored_before_it_was_attached(
    app: WorkerApp,
) -> None:
    result = app.send_task("tests.noop", queue="file_tasks")
    app.backend.mark_as_done(result.id, "early")
    seen: list[Any] = []

    result.then(lambda r: seen.append(r.result))

    assert seen == ["early"]


def test_only_celerys_plain_redis_backend_is_replaced() -> None:
    assert backend_class_for(RedisBackend) is LeanRedisBackend
    assert backend_class_for(SentinelBackend) is SentinelBackend
    assert backend_class_for(LeanRedisBackend) is LeanRedisBackend


def test_a_started_state_sent_without_waiting_lands_before_the_next_store(
    app: WorkerApp, redis_client: redis.Redis
) -> None:
    backend = app.backend
    task_id = str(uuid.uuid4())
    pool = backend.client.connection_pool

    backend.store_started_soon(task_id, {"pid": 1, "hostname": "w@h"})

    wait_for(lambda: redis_client.get(backend.get_key_for_task(task_id)) is not None, timeout=2)
    assert stored(redis_client, backend, task_id)["status"] == states.STARTED
    assert len(pool._in_use_connections) == 1  # its reply not read yet: not back in the pool
    backend.mark_as_done(task_id, "ok")
    assert stored(redis_client, backend, task_id)["status"] == states.SUCCESS
    assert len(pool._in_use_connections) == 0


def test_a_started_state_redis_refuses_is_dropped_and_the_result_still_stored(
    app: WorkerApp, redis_client: redis.Redis
) -> None:
    backend = app.backend
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    backend.store_started_soon(first, {"pid": 1})
    backend.mark_as_done(first, 1)
    redis_client.script_flush()  # Redis restarted: the script is gone, the connection lives

    backend.store_started_soon(second, {"pid": 1})
    backend.mark_as_done(second, 2)

    assert stored(redis_client, backend, second)["result"] == 2
