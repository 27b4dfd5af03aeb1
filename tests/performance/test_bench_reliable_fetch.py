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
from tests.performance.conftest import report
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
    report(
        f"drain no-op, c=2, side by side: reliable fetch {statistics.median(reliable):.0f}/s "
        f"({[round(x) for x in reliable]}), kombu BRPOP {statistics.median(brpop):.0f}/s "
        f"({[round(x) for x in brpop]}); median of the rounds' ratios {ratio:.3f}x "
        f"({[round(x, 3) for x in ratios]})"
    )
    assert ratio >= 0.95
