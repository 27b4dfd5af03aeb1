"""Workflows on real workers: order, failure semantics by trigger rule, exactly-once fan-in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.metrics.domain_counters import read_domain_counts
from personal_assistant.workers.schedulers.dependency_scheduler import (
    submit_workflow,
    workflow_status,
)
from personal_assistant.workers.workflows.definition import WorkflowValidationError
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess
from tests.support.workflow_steps import Q, finished, ran, step

pytestmark = pytest.mark.integration


def test_a_diamond_runs_each_task_once_after_its_dependencies(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], concurrency=2)
    workflow_id = submit_workflow(
        {
            "name": "diamond",
            "tasks": {
                "a": step("a"),
                "b": step("b", "a"),
                "c": step("c", "a"),
                "d": step("d", "b", "c"),
            },
        },
        app=producer_app,
    )
    status = finished(producer_app, workflow_id)
    assert status["state"] == "completed"
    order = ran(redis_client)
    assert sorted(order) == ["a", "b", "c", "d"]
    assert order[0] == "a" and order[-1] == "d"
    tasks = status["tasks"]
    assert all(t["status"] == "completed" for t in tasks.values())
    assert tasks["d"]["started_at"] >= max(tasks["b"]["ended_at"], tasks["c"]["ended_at"])
    assert tasks["b"]["started_at"] >= tasks["a"]["ended_at"]


def test_a_success_is_recorded_before_celery_stores_the_result_like_a_chain_step(
    producer_app: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], concurrency=2)
    workflow_id = submit_workflow(
        {"name": "pair", "tasks": {"a": step("a"), "b": step("b", "a")}}, app=producer_app
    )
    status = finished(producer_app, workflow_id)
    assert status["state"] == "completed"
    for task in status["tasks"].values():
        stored = producer_app.AsyncResult(task["celery_id"])
        assert stored.status == "SUCCESS"  # Celery's result is still stored as usual
        date_done = cast(datetime, stored.date_done).replace(tzinfo=UTC).timestamp()
        assert task["ended_at"] <= date_done  # recorded by the link, before the store


def test_a_failing_branch_skips_or_runs_its_dependents_by_their_rules(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], concurrency=2)
    workflow_id = submit_workflow(
        {
            "name": "branches",
            "tasks": {
                "a": step("a"),
                "bad": step("bad", "a", kwargs={"fail": True}),
                "good": step("good", "a", kwargs={"result": {"n": 5}}),
                "join": step("join", "bad", "good"),  # all_success
                "alarm": step("alarm", "bad", trigger_rule="one_failed"),
                "cleanup": step("cleanup", "bad", "good", trigger_rule="all_done"),
                "either": step("either", "bad", "good", trigger_rule="one_success"),
                "big": step("big", "good", condition="good.result['n'] > 10"),
                "after_big": step("after_big", "big"),
                "tolerant": step("tolerant", "big", "good", trigger_rule="none_failed"),
                "report": step("report", "join", trigger_rule="all_failed"),
            },
        },
        app=producer_app,
    )
    status = finished(producer_app, workflow_id)
    statuses = {tid: t["status"] for tid, t in status["tasks"].items()}
    assert statuses == {
        "a": "completed",
        "bad": "failed",
        "good": "completed",
        "join": "upstream_failed",
        "alarm": "completed",
        "cleanup": "completed",
        "either": "completed",
        "big": "skipped",
        "after_big": "skipped",
        "tolerant": "completed",
        "report": "completed",
    }
    assert "bad failed" in status["tasks"]["bad"]["error"]
    assert "condition is false" in status["tasks"]["big"]["error"]
    assert set(ran(redis_client)) == {
        "a",
        "bad",
        "good",
        "alarm",
        "cleanup",
        "either",
        "tolerant",
        "report",
    }
    # Leaves decide: after_big was skipped and the others completed, so the workflow completed.
    assert status["state"] == "completed"


def test_a_failed_leaf_fails_the_workflow_and_its_end_is_counted_once(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE])
    workflow_id = submit_workflow(
        {
            "tasks": {
                "a": step("a"),
                "b": step("b", "a", kwargs={"fail": True}),
                "c": step("c", "b"),
            }
        },
        app=producer_app,
    )
    status = finished(producer_app, workflow_id)
    assert status["state"] == "failed"
    assert status["tasks"]["c"]["status"] == "upstream_failed"
    # pa_workflows_ended_total{state="failed"}, counted in the transaction that ended it.
    assert read_domain_counts(redis_client) == {("pa_workflows_ended", "failed"): 1}


# Eight races of 500 upstreams ending on four processes (4,000 tasks, about 35 s here): each
# repetition is a fresh race for the sink's dispatch. Twenty (a minute and a half on a busy
# day) proved nothing more and pushed `make test` towards its ten minutes.
REPETITIONS = 8


@pytest.mark.timeout(360)
def test_a_fan_in_of_500_upstreams_on_2_workers_dispatches_its_dependent_exactly_once(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    for _ in range(2):
        start_worker([c.MAINTENANCE_QUEUE], concurrency=2)
    uppers = [f"u{i}" for i in range(500)]
    definition = {
        "name": "fan-in",
        "tasks": {
            **{u: step(u) for u in uppers},
            "sink": step("sink", *uppers),
        },
    }
    for repetition in range(REPETITIONS):
        redis_client.delete("wf:ran")
        workflow_id = submit_workflow(definition, app=producer_app)
        status = finished(producer_app, workflow_id, timeout=120)
        assert status["state"] == "completed", (repetition, status["counts"])
        runs = ran(redis_client)
        assert runs.count("sink") == 1, repetition
        assert len(runs) == 501, repetition
        assert runs[-1] == "sink"


def test_retries_of_an_upstream_do_not_count_as_its_end(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], env={"RETRY_BACKOFF_BASE": "0.2"})
    workflow_id = submit_workflow(
        {
            "tasks": {
                "fetch": {"task": "tests.flaky", "args": ["wf-fetch", 2], "options": Q},
                "after": step("after", "fetch"),
                "on_failure": step("on_failure", "fetch", trigger_rule="one_failed"),
            }
        },
        app=producer_app,
    )
    status = finished(producer_app, workflow_id)
    assert status["state"] == "completed"
    assert redis_client.llen("attempts:wf-fetch") == 3
    assert status["tasks"]["fetch"]["status"] == "completed"
    assert status["tasks"]["fetch"]["result"] == 3
    assert status["tasks"]["on_failure"]["status"] == "skipped"
    assert ran(redis_client) == ["after"]


def test_a_task_waiting_past_its_timeout_is_timed_out_and_fails_its_dependents(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], concurrency=2)
    workflow_id = submit_workflow(
        {
            "tasks": {
                "slow": step("slow", kwargs={"seconds": 3.0}),
                "impatient": step("impatient", "slow", timeout=1),
                "downstream": step("downstream", "impatient"),
                "alarm": step("alarm", "impatient", trigger_rule="one_failed"),
            }
        },
        app=producer_app,
    )
    status = finished(producer_app, workflow_id, timeout=30)
    tasks = status["tasks"]
    assert tasks["impatient"]["status"] == "timed_out"
    assert "timeout" in tasks["impatient"]["error"]
    assert tasks["downstream"]["status"] == "upstream_failed"
    assert tasks["alarm"]["status"] == "completed"
    assert tasks["slow"]["status"] == "completed"
    assert status["state"] == "failed"
    assert "impatient" not in ran(redis_client)


def test_a_workflow_past_its_deadline_times_out_everything_still_open(
    producer_app: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Two processes: the timeout check must not wait behind the long task it times out.
    start_worker([c.MAINTENANCE_QUEUE], concurrency=2)
    workflow_id = submit_workflow(
        {
            "deadline": 1,
            "tasks": {
                "long": step("long", kwargs={"seconds": 4.0}),
                "next": step("next", "long"),
            },
        },
        app=producer_app,
    )
    status = finished(producer_app, workflow_id, timeout=30)
    assert status["state"] == "failed"
    assert {t["status"] for t in status["tasks"].values()} == {"timed_out"}
    assert all("deadline" in t["error"] for t in status["tasks"].values())


def test_workflow_state_survives_a_restart_of_every_worker(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    first = start_worker([c.MAINTENANCE_QUEUE])
    workflow_id = submit_workflow(
        {
            "tasks": {
                "a": step("a", kwargs={"seconds": 1.0}),
                "b": step("b", "a"),
                "c": step("c", "b"),
            }
        },
        app=producer_app,
    )
    wait_for(
        lambda: workflow_status(workflow_id, app=producer_app)["tasks"]["a"]["status"] == "running",
        timeout=30,
    )
    first.stop()  # warm shutdown: a finishes, b is queued in Redis with nobody to run it
    assert workflow_status(workflow_id, app=producer_app)["state"] == "running"
    start_worker([c.MAINTENANCE_QUEUE])
    status = finished(producer_app, workflow_id)
    assert status["state"] == "completed"
    assert ran(redis_client) == ["a", "b", "c"]


def test_an_invalid_workflow_is_refused_whole_and_nothing_is_stored_or_dispatched(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
) -> None:
    with pytest.raises(WorkflowValidationError) as refused:
        submit_workflow(
            {
                "tasks": {
                    "a": step("a", "c"),
                    "b": step("b", "a"),
                    "c": step("c", "b"),
                    "d": {"task": "no.such.task"},
                    "e": step("e", "ghost", condition="__import__('os')"),
                }
            },
            app=producer_app,
        )
    message = str(refused.value)
    assert "unknown Celery task 'no.such.task'" in message
    assert "unknown task 'ghost'" in message
    assert "dependency cycle" in message
    assert "calls are not allowed" in message
    assert redis_client.keys("pa:wf:*") == []
    assert redis_client.keys(f"{c.MAINTENANCE_QUEUE}*") == []


def test_a_worker_refuses_to_dispatch_a_task_its_settings_do_not_allow_and_the_workflow_ends(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # The producer allows tests.*; the worker, which dispatches b when a ends, only tests.step.
    start_worker([c.MAINTENANCE_QUEUE], env={"WORKFLOW_ALLOWED_TASKS": "tests.step"})
    workflow_id = submit_workflow(
        {
            "tasks": {
                "a": step("a"),
                "b": {"task": "tests.noop", "depends_on": ["a"], "options": Q},
                "alarm": step("alarm", "b", trigger_rule="one_failed"),
            }
        },
        app=producer_app,
    )
    status = finished(producer_app, workflow_id)
    tasks = status["tasks"]
    assert tasks["b"]["status"] == "failed"
    assert "'tests.noop' may not run in a workflow: not on the allow-list" in tasks["b"]["error"]
    assert producer_app.AsyncResult(tasks["b"]["celery_id"]).status == "PENDING"  # never sent
    assert tasks["alarm"]["status"] == "completed"
    assert ran(redis_client) == ["a", "alarm"]
    assert status["state"] == "completed"  # its one leaf, alarm, completed
