"""Publish workflow tasks in the same Redis transaction that decides they are ready.

On a Redis broker a published task is one LPUSH onto the queue's list. The runtime builds each
ready task's message with Celery and kombu (the same bytes ``send_task`` would push), captures
that LPUSH instead of running it, and adds it to the commit that records the decision
(commit.py). So "ready" and "published" commit together or not at all: no worker crash
between the two can lose a dependent or send it twice, and the hop saves the publish round trip.

``before_task_publish`` is sent while the message is built, so the publish hooks stamp it as
they stamp any other; ``after_task_publish`` is sent after the commit, once per message really
published (a commit that lost a race publishes nothing). Brokers other than Redis fall back to
``send_task`` after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from kombu.transport import redis as kombu_redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.config import is_redis_url
from personal_assistant.workers.hooks.registry import publishing


@dataclass
class CapturedPublish:
    """One task message, ready to be pushed by a transaction."""

    task_name: str
    queue: str
    commands: list[tuple[str, tuple[Any, ...]]]
    headers: dict[str, Any]
    body: Any


class _CommandSink:
    """Stands in for kombu's publish batch and keeps the final Redis commands."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


class _Capture:
    """A producer-level batch that routes the prepared message into a :class:`_CommandSink`."""

    def __init__(self) -> None:
        self.sink = _CommandSink()

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        return channel.basic_publish(message, _publish_batch=self.sink, **kwargs)


def commit_can_publish(app: Celery) -> bool:
    """True when the workflow commit can push ``app``'s messages itself: the broker is the very
    Redis (and db) the workflow state lives in, and its messages can be captured."""
    return is_redis_url(str(app.conf.broker_url)) and supports_capture(app)


def supports_capture(app: Celery) -> bool:
    """True when messages can be captured: a kombu Redis channel with publish batches."""
    with app.producer_or_acquire() as producer:
        return hasattr(producer, "_batch_local") and isinstance(
            producer.channel, kombu_redis.Channel
        )


def _route(
    app: Celery, name: str, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """Where and at which priority ``name`` goes: the route's queue and priority, the task's
    ``options`` winning (Celery's router merges them so)."""
    route: dict[str, Any] = app.amqp.router.route(dict(options), name, args, kwargs)
    return route


def routed_priority(
    app: Celery, name: str, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
) -> int | None:
    """The priority a workflow task's message carries: its ``options``' own, else its route's
    (the queue's default, routing.py); None when neither names one (the publish hook then
    gives ``PRIORITY_DEFAULT``).

    Never the task's own ``priority`` attribute: Celery sets it from ``task_default_priority``
    (5) for every registered task, and ``send_task`` of a registered name (Celery 5.7) merges
    it over the route's, which put the ai tasks a workflow started at 5 instead of 9.
    """
    priority = _route(app, name, args, kwargs, options).get("priority")
    return None if priority is None else int(priority)


def capture(
    app: Celery,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    task_id: str,
    headers: dict[str, Any],
    options: dict[str, Any],
    link: list[dict[str, Any]] | None = None,
) -> CapturedPublish:
    """Build the message ``send_task`` would publish (with ``link`` callbacks) and capture its
    Redis commands."""
    route = _route(app, name, args, kwargs, options)
    queue_obj = route.get("queue")
    queue = getattr(queue_obj, "name", queue_obj) or c.DEFAULT_QUEUE
    parent = app.current_worker_task
    parent_id = parent.request.id if parent else None
    root_id = (parent.request.root_id or parent.request.id) if parent else None
    message = app.amqp.create_task_message(
        task_id,
        name,
        args,
        kwargs,
        root_id=root_id,
        parent_id=parent_id,
        reply_to=app.thread_oid,
        callbacks=link,
    )
    message_headers, properties, body, _ = message
    message_headers.update(headers)
    properties = {**properties, "priority": route.get("priority")}
    # The publish hooks (default priority, publish timestamp) fill in this very message, as
    # they would for send_task; only after_task_publish waits for the commit.
    with publishing(app):
        signals.before_task_publish.send(
            sender=name,
            body=body,
            exchange="",
            routing_key=queue,
            headers=message_headers,
            properties=properties,
            declare=[],
            retry_policy=None,
        )
    batch = _Capture()
    with app.producer_or_acquire() as producer:
        producer._batch_local.current = batch
        try:
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                serializer="json",
                compression=None,
                headers=message_headers,
                delivery_mode=2,
                retry=False,
                declare=None,
                **properties,
            )
        finally:
            del producer._batch_local.current
    return CapturedPublish(name, queue, batch.sink.commands, message_headers, body)


def signal_published(app: Celery, published: CapturedPublish) -> None:
    """Send Celery's after-publish signal, as ``app``'s, for a message the commit did push."""
    with publishing(app):
        signals.after_task_publish.send(
            sender=published.task_name,
            body=published.body,
            exchange="",
            routing_key=published.queue,
            headers=published.headers,
        )
