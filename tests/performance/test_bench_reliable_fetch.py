"""Drain throughput with the reliable fetch against kombu's BRPOP on the same worker
(target: reliable >= 0.95 x BRPOP).

No-op tasks, c=2, prefetch 1, one worker per side running side by side on its own queue
(tests/support/side_by_side.py); BROKER_RELIABLE_FETCH=false gives kombu's own fetch. Rounds
swap which queue each side consumes; the median of the rounds' ratios is asserted.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.performance.conftest import Figure, record
from tests.support.side_by_side import side_by_side
from tests.support.worker import WorkerProcess

N = 4000
ROUNDS = 9
QUEUES = (c.FILE_QUEUE, c.SYNC_QUEUE)
RELIABLE = {"BROKER_RELIABLE_FETCH": "true"}
BRPOP = {"BROKER_RELIABLE_FETCH": "false"}


def test_the_reliable_fetch_drains_at_least_95_percent_as_fast_as_brpop(
    producer_app: WorkerApp, start_worker: Callable[..., WorkerProcess]
) -> None:
    reliable: list[float] = []
    brpop: list[float] = []
    for round_ in range(ROUNDS):
        first, second = QUEUES if round_ % 2 == 0 else QUEUES[::-1]
        rate_reliable, rate_brpop = side_by_side(
            producer_app, start_worker, (first, RELIABLE), (second, BRPOP), N
        )
        reliable.append(rate_reliable)
        brpop.append(rate_brpop)
    ratios = [a / b for a, b in zip(reliable, brpop, strict=True)]
    ratio = statistics.median(ratios)
    record(
        Figure(
            benchmark="reliable fetch",
            measure="drain rate, no-op tasks, c=2",
            ours=statistics.median(reliable),
            unit="tasks/s",
            anchor=statistics.median(brpop),
            anchor_name="kombu BRPOP, same worker",
            ratio=ratio,
            target=">= 0.95x",
            met=ratio >= 0.95,
            detail=(
                f"side by side, {N} tasks a side and round: reliable fetch "
                f"{statistics.median(reliable):.0f}/s ({[round(x) for x in reliable]}), kombu "
                f"BRPOP {statistics.median(brpop):.0f}/s ({[round(x) for x in brpop]}); ratio: "
                f"the median of the rounds' ratios ({[round(x, 3) for x in ratios]})"
            ),
            series={
                "reliable fetch": [[i + 1, x] for i, x in enumerate(reliable)],
                "kombu BRPOP": [[i + 1, x] for i, x in enumerate(brpop)],
            },
            x_label="round",
        )
    )
    assert ratio >= 0.95
