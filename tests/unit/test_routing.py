"""Routing: each domain module's tasks go to its queue at the domain's priority."""

from __future__ import annotations

from typing import Any

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.celery_config import task_queues
from personal_assistant.workers.routing import queue_for_task, task_routes

DOMAIN_TASKS = {queue: f"{c.TASKS_PACKAGE}.{queue}.probe" for queue in c.QUEUES}
OUTSIDE_NAMES = [
    "celery.chord_unlock",
    "tests.record",
    f"{c.TASKS_PACKAGE}.ai_tasks_extra.job",  # a module whose name only starts like a domain's
    f"{c.TASKS_PACKAGE}.base_tasks.something",
]


def route(app: WorkerApp, name: str, **options: Any) -> dict[str, Any]:
    """Where Celery's router sends a task of this name with these publish options."""
    routed: dict[str, Any] = app.amqp.router.route(options, name)
    return routed


@pytest.mark.parametrize(("queue", "task_name"), DOMAIN_TASKS.items())
def test_a_domain_module_task_is_routed_to_its_domain_queue(queue: str, task_name: str) -> None:
    assert queue_for_task(task_name) == queue


def test_a_task_in_a_sub_module_of_a_domain_goes_to_the_domain_queue() -> None:
    assert queue_for_task(f"{c.TASKS_PACKAGE}.email_tasks.outbox.send") == c.EMAIL_QUEUE


@pytest.mark.parametrize("task_name", OUTSIDE_NAMES)
def test_a_task_outside_the_domain_modules_goes_to_the_default_queue(task_name: str) -> None:
    assert queue_for_task(task_name) == c.DEFAULT_QUEUE


def test_the_route_priorities_are_the_domain_priorities() -> None:
    routes = task_routes()

    assert {r["queue"]: r["priority"] for r in routes.values()} == c.DOMAIN_PRIORITIES
    for pattern, r in routes.items():
        assert pattern == f"{c.TASKS_PACKAGE}.{r['queue']}.*"
        assert r["routing_key"] == r["queue"]


def test_there_is_one_priority_queue_per_domain() -> None:
    queues = task_queues()

    assert [q.name for q in queues] == list(c.QUEUES)
    for queue in queues:
        assert queue.routing_key == queue.name
        assert queue.exchange.name == queue.name
        assert queue.as_dict()["queue_arguments"] == {"x-max-priority": c.PRIORITY_MAX}


@pytest.mark.parametrize(("queue", "task_name"), DOMAIN_TASKS.items())
def test_the_apps_router_sends_a_domain_task_to_its_queue_at_the_domain_priority(
    producer_app: WorkerApp, queue: str, task_name: str
) -> None:
    routed = route(producer_app, task_name)

    assert routed["queue"].name == queue
    assert routed["routing_key"] == queue
    assert routed["priority"] == c.DOMAIN_PRIORITIES[queue]


@pytest.mark.parametrize("task_name", [*DOMAIN_TASKS.values(), *OUTSIDE_NAMES])
def test_the_apps_router_agrees_with_queue_for_task(
    producer_app: WorkerApp, task_name: str
) -> None:
    assert route(producer_app, task_name)["queue"].name == queue_for_task(task_name)


def test_a_callers_priority_overrides_the_routes(producer_app: WorkerApp) -> None:
    routed = route(producer_app, DOMAIN_TASKS[c.AI_QUEUE], priority=2)

    assert routed["queue"].name == c.AI_QUEUE
    assert routed["priority"] == 2


def test_a_callers_queue_overrides_the_routes(producer_app: WorkerApp) -> None:
    routed = route(producer_app, DOMAIN_TASKS[c.AI_QUEUE], queue=c.MAINTENANCE_QUEUE)

    assert routed["queue"].name == c.MAINTENANCE_QUEUE
