"""The worker's screen: why a real kombu task message cannot run, before Celery sees it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Producer

from personal_assistant.workers.broker import custody, poison
from personal_assistant.workers.broker.custody import CustodyKeys
from personal_assistant.workers.broker.intake import ScreeningConsumer
from personal_assistant.workers.broker.poison import Rejection
from personal_assistant.workers.celery_app import WorkerApp

TASK = "tests.count"


@pytest.fixture
def screener(producer_app: WorkerApp) -> ScreeningConsumer:
    """A ScreeningConsumer with only what ``screen`` reads: the app and its task strategies."""
    consumer: ScreeningConsumer = ScreeningConsumer.__new__(ScreeningConsumer)
    consumer.app = producer_app
    consumer.strategies = {name: object() for name in producer_app.tasks}
    assert TASK in consumer.strategies
    return consumer


@pytest.fixture
def channel() -> Iterator[Any]:
    """A kombu channel (memory transport) to publish messages on and read them back."""
    conn = Connection("memory://")
    yield conn.default_channel
    conn.release()


def read_back(channel: Any, body: Any, headers: dict[str, Any], **properties: Any) -> Any:
    """Publish ``body`` with ``headers`` as kombu does, and return the message a consumer gets."""
    queue = Queue(f"unit-intake-{uuid.uuid4().hex}")
    Producer(channel).publish(
        body,
        routing_key=queue.name,
        declare=[queue],
        headers=headers,
        serializer="json",
        **properties,
    )
    message = channel.basic_get(queue.name, no_ack=True)
    assert message is not None
    return message


def task_message(
    channel: Any,
    app: WorkerApp,
    *,
    name: str = TASK,
    args: tuple[Any, ...] = (1,),
    kwargs: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
) -> Any:
    """A task message as ``app`` writes it (protocol 2), with ``headers`` changed."""
    built = app.amqp.create_task_message(str(uuid.uuid4()), name, args, kwargs or {})
    return read_back(channel, built.body, {**built.headers, **(headers or {})}, **built.properties)


def test_a_task_message_as_celery_writes_it_passes_the_screen(
    screener: ScreeningConsumer, channel: Any, producer_app: WorkerApp
) -> None:
    message = task_message(channel, producer_app, kwargs={"hold": 0.0})

    assert message.headers["task"] == TASK
    assert screener.screen(message) is None


def test_a_task_this_worker_does_not_know_is_rejected_as_unknown(
    screener: ScreeningConsumer, channel: Any, producer_app: WorkerApp
) -> None:
    message = task_message(channel, producer_app, name="tests.no_such_task")

    assert screener.screen(message) == Rejection(
        poison.UNKNOWN_TASK, "no task named 'tests.no_such_task' on this worker"
    )


def test_a_retry_count_that_is_not_a_number_is_rejected_as_a_bad_header(
    screener: ScreeningConsumer, channel: Any, producer_app: WorkerApp
) -> None:
    message = task_message(channel, producer_app, headers={"retries": "abc"})

    rejection = screener.screen(message)

    assert rejection is not None
    assert rejection.reason == poison.BAD_HEADER
    assert "'retries'" in rejection.detail


def test_an_eta_that_is_not_a_date_is_rejected_as_a_bad_eta(
    screener: ScreeningConsumer, channel: Any, producer_app: WorkerApp
) -> None:
    message = task_message(channel, producer_app, headers={"eta": "yesterday"})

    rejection = screener.screen(message)

    assert rejection is not None
    assert rejection.reason == poison.BAD_ETA
    assert "'eta'" in rejection.detail
    assert "'yesterday'" in rejection.detail


def test_more_arguments_than_the_task_takes_are_rejected_as_invalid_arguments(
    screener: ScreeningConsumer, channel: Any, producer_app: WorkerApp
) -> None:
    message = task_message(channel, producer_app, args=(1, 2, 3))

    rejection = screener.screen(message)

    assert rejection is not None
    assert rejection.reason == poison.INVALID_ARGUMENTS
    assert "positional argument" in rejection.detail


def test_a_keyword_the_task_does_not_take_is_rejected_as_invalid_arguments(
    screener: ScreeningConsumer, channel: Any, producer_app: WorkerApp
) -> None:
    message = task_message(channel, producer_app, kwargs={"colour": "red"})

    rejection = screener.screen(message)

    assert rejection is not None
    assert rejection.reason == poison.INVALID_ARGUMENTS
    assert "colour" in rejection.detail


def test_a_protocol_1_message_without_task_headers_is_rejected_as_a_bad_header(
    screener: ScreeningConsumer, channel: Any
) -> None:
    body = {"task": TASK, "id": str(uuid.uuid4()), "args": [1], "kwargs": {}}
    message = read_back(channel, body, headers={})

    rejection = screener.screen(message)

    assert rejection is not None
    assert rejection.reason == poison.BAD_HEADER
    assert "protocol 1" in rejection.detail


def test_a_body_that_is_not_args_kwargs_embed_is_rejected_as_a_bad_body(
    screener: ScreeningConsumer, channel: Any, producer_app: WorkerApp
) -> None:
    built = producer_app.amqp.create_task_message(str(uuid.uuid4()), TASK, (1,), {})
    message = read_back(channel, {"args": [1]}, built.headers)

    assert screener.screen(message) == Rejection(
        poison.BAD_BODY, "the body is not [args, kwargs, embed]"
    )


def test_a_body_that_cannot_be_decoded_is_rejected_as_a_bad_body(
    screener: ScreeningConsumer, channel: Any, producer_app: WorkerApp
) -> None:
    built = producer_app.amqp.create_task_message(str(uuid.uuid4()), TASK, (1,), {})
    queue = Queue(f"unit-intake-{uuid.uuid4().hex}")
    Producer(channel).publish(
        "[[1], {",
        routing_key=queue.name,
        declare=[queue],
        headers=built.headers,
        content_type="application/json",
        content_encoding="utf-8",
    )
    message = channel.basic_get(queue.name, no_ack=True)

    rejection = screener.screen(message)

    assert rejection is not None
    assert rejection.reason == poison.BAD_BODY
    assert rejection.detail.startswith("the body cannot be decoded")


def test_a_poison_envelope_from_the_fetch_is_rejected_with_its_reason(
    screener: ScreeningConsumer, channel: Any, redis_client: redis.Redis
) -> None:
    redis_client.lpush("q", b"{not json")
    command = custody.fetch_command(
        CustodyKeys(),
        ["q"],
        ["q"],
        now=1.0,
        consumer="c1",
        max_bytes=4096,
        keep_bytes=100,
    )
    _, _, item = custody.fetch(redis_client, command)
    message = channel.Message(json.loads(item), channel=channel)

    assert screener.screen(message) == Rejection(
        poison.NOT_JSON, "the message is not JSON (9 bytes)"
    )
