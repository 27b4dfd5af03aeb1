"""Latency a dependency hop adds (upstream done -> downstream started) vs a Celery chain hop.

Measured like the anchor measures Celery's chain: the median time of a one-task workflow and of
a five-step chain workflow, one at a time on a prefork worker (c=2) on the same Redis;
hop = (chain5 - single) / 4. Both wait for their last task's result through the result backend.
The anchor (chain_anchor.py) runs against another database of the
same Redis server in the same run. Target: our hop no worse than the chain's.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import chain as celery_chain

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.workflows.runtime import celery_task_id, submit_workflow
from tests.performance.conftest import Figure, record, run_anchor
from tests.support.redis_server import RedisServer
from tests.support.worker import WorkerProcess

REPS = 60
ROUNDS = 5  # median of five alternating rounds: single rounds swing by ±20 % here
Q = {"queue": c.MAINTENANCE_QUEUE}


def chain(length: int) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for i in range(length):
        tasks[f"s{i}"] = {
            "task": "tests.noop",
            "args": [],
            "options": Q,
            "depends_on": [f"s{i - 1}"] if i else [],
        }
    return {"name": f"chain{length}", "tasks": tasks}


def run_once(app: WorkerApp, definition: dict[str, Any]) -> float:
    """Submit and wait for the last task's result, the way ``chain(...).get()`` waits (the
    result backend's pub/sub): a polling loop would steal CPU from the worker on 2 cores."""
    start = time.perf_counter()
    workflow_id = submit_workflow(definition, app=app)
    last = list(definition["tasks"])[-1]
    app.AsyncResult(celery_task_id(workflow_id, last)).get(timeout=30)
    return time.perf_counter() - start


def chain_once(app: WorkerApp, length: int) -> float:
    noop = app.tasks["tests.noop"]
    start = time.perf_counter()
    signature = celery_chain(*[noop.si().set(**Q) for _ in range(length)])
    signature.apply_async().get(timeout=30)
    return time.perf_counter() - start


def hop_ms(once: Callable[[int], float]) -> tuple[float, float, float]:
    """(single, chain of five, hop) medians in ms, measured the anchor's way."""
    single = statistics.median(once(1) for _ in range(REPS)) * 1000
    five = statistics.median(once(5) for _ in range(REPS)) * 1000
    return single, five, (five - single) / 4


def test_a_dependency_hop_adds_no_more_latency_than_a_celery_chain_hop(
    anchors: Path,
    producer_app: WorkerApp,
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker([c.MAINTENANCE_QUEUE], concurrency=2)
    producer_app.loader.import_default_modules()
    run_once(producer_app, chain(1))  # warm up connections and caches
    chain_once(producer_app, 1)
    ours, theirs = [], []
    for _ in range(ROUNDS):  # alternate, so drift on this noisy machine hits both alike
        ours.append(hop_ms(lambda n: run_once(producer_app, chain(n))))
        theirs.append(hop_ms(lambda n: chain_once(producer_app, n)))
    our_hop = statistics.median(h for _, _, h in ours)
    chain_hop = statistics.median(h for _, _, h in theirs)
    record(
        Figure(
            benchmark="hop latency",
            measure="latency a dependency hop adds",
            ours=our_hop,
            unit="ms",
            anchor=chain_hop,
            anchor_name="Celery chain hop, same worker",
            # A hop is a difference of medians: noise can make it zero or negative.
            ratio=our_hop / chain_hop if chain_hop > 0 else None,
            target="<= 1.0x",
            met=our_hop <= chain_hop,
            detail=(
                f"same Redis and worker, medians of {ROUNDS} alternating rounds: workflow hop "
                f"{our_hop:.2f} ms (single/chain5/hop ms per round "
                f"{[tuple(round(v, 2) for v in r) for r in ours]}), Celery chain hop "
                f"{chain_hop:.2f} ms ({[tuple(round(v, 2) for v in r) for r in theirs]})"
            ),
            series={
                "workflow hop": [[i + 1, h] for i, (_, _, h) in enumerate(ours)],
                "Celery chain hop": [[i + 1, h] for i, (_, _, h) in enumerate(theirs)],
            },
            x_label="round",
        )
    )
    anchor_url = redis_server.url.rsplit("/", 1)[0] + "/1"
    line = run_anchor(anchors / "chain_anchor.py", anchor_url, str(REPS))
    match = re.search(r"hop (-?[\d.]+) ms", line.splitlines()[-1])
    anchor_hop = float(match.group(1)) if match else None
    record(
        Figure(
            benchmark="hop latency",
            measure="latency a dependency hop adds, vs the anchor script",
            ours=our_hop,
            unit="ms",
            anchor=anchor_hop,
            anchor_name="bare Celery chain hop, chain_anchor.py",
            ratio=our_hop / anchor_hop if anchor_hop and anchor_hop > 0 else None,
            detail=f"chain_anchor.py (its own app and worker): {line.splitlines()[-1]}",
        )
    )
    assert match, line
    assert our_hop <= chain_hop
