"""Nothing is lost when whole workers are SIGKILLed at random: only what they held runs again."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.workflows.runtime import submit_workflow
from tests.support.chaos import FAST_RECOVERY, all_ran, run_chaos, run_counts, unexcused
from tests.support.redis_server import free_port
from tests.support.worker import WorkerProcess
from tests.support.workflow_steps import finished, ran, step

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

TASKS = 4000
KILLS = 6


def test_counting_tasks_survive_random_sigkills_of_whole_workers(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    for i in range(TASKS):
        producer_app.send_task("tests.count", args=[i, 0.005], queue=c.FILE_QUEUE)

    def start() -> WorkerProcess:
        env = {**FAST_RECOVERY, "METRICS_PORT": str(free_port())}
        return start_worker([c.FILE_QUEUE], concurrency=2, env=env)

    report = run_chaos(
        redis_client, start, workers=2, kills=KILLS, done=all_ran(redis_client, TASKS)
    )
    lost, repeated = run_counts(redis_client, TASKS)

    assert report.kills >= 3, "the drain ended before the chaos did: make the tasks longer"
    assert lost == []
    assert unexcused(repeated, report, "tests.count") == []
    print(f"kills {report.kills}, held at kills {len(report.held)}, repeated {len(repeated)}")


def test_a_200_upstream_fan_in_runs_its_sink_once_through_random_sigkills(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    uppers = [f"u{i}" for i in range(200)]
    definition = {
        "name": "chaos-fan-in",
        "tasks": {
            **{u: step(u, kwargs={"seconds": 0.12}) for u in uppers},
            "sink": step("sink", *uppers),
        },
    }
    workflow_id = submit_workflow(definition, app=producer_app)

    def start() -> WorkerProcess:
        env = {**FAST_RECOVERY, "METRICS_PORT": str(free_port())}
        return start_worker([c.MAINTENANCE_QUEUE], concurrency=2, env=env)

    report = run_chaos(
        redis_client, start, workers=2, kills=3, done=lambda: "sink" in ran(redis_client)
    )
    status = finished(producer_app, workflow_id, timeout=60)
    runs = ran(redis_client)

    assert report.kills >= 2, "the workflow ended before the chaos did: make the steps longer"
    assert status["state"] == "completed", status["counts"]
    assert set(uppers) <= set(runs)
    sink_held = "sink" in report.held_kwarg("tests.step", "name")
    assert runs.count("sink") == 1 or (sink_held and runs.count("sink") == 2)
    held = report.held_kwarg("tests.step", "name")
    assert [u for u in uppers if runs.count(u) > 1 and u not in held] == []
    repeated = [u for u in uppers if runs.count(u) > 1]
    print(f"fan-in: kills {report.kills}, sink runs {runs.count('sink')}, repeated {len(repeated)}")
