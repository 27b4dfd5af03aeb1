"""Enqueue rate, and drain rate at 1, 2 and 4 worker processes, against plain Celery.

Enqueue: the test process publishing N no-op tasks, ours with ``app.send_task`` (this package's
producer app: priorities, routing, JSON) against plain Celery's ``apply_async``
(tests/support/plain_noop_app.py), each queue filled in one timed block, the order alternating.
Drain: the same rounds then start one worker a side at once, ``-c 1``, ``2`` or ``4`` prefork
children of one worker, and take both rates over the window in which both were draining
(tests/support/side_by_side_apps.py). Ours runs its defaults with child recycling off; plain
Celery runs as bare_celery.py configures it. Side by side, the two workers share the machine's
two cores, so a rate here is half a machine's, for both alike.

Targets: c=2 is held to the full-system benchmark's target (ours >= 1.0x plain). The figures
at c=1 and c=4, and the enqueue rate, are recorded without a target (met=None): the issue
sets none, and at c=4 eight children contend for two cores (side by side), so how widely those
rounds' ratios spread is not known yet; assert them once full-size runs show them stable. A
last figure holds the series of rates against worker processes for the report's plot.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator

import pytest
from celery import Celery

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.performance.conftest import Figure, record
from tests.support import plain_noop_app as plain
from tests.support.side_by_side_apps import Round, alternating_rounds, ours_side, plain_side
from tests.support.worker import WorkerProcess

# Tasks per queue and round: the faster side ends the common window, and ours drained up to
# 770/s side by side in the checks at a small size; 10,000 keep the window above 10 s.
N = 10_000
# Five rounds per concurrency (15 in all, about a quarter of an hour: each round also waits for
# the slower side's last task): enough for a median held to 1.0x while ours leads by far (2x at
# c=2 in the checks); add rounds if the margin ever shrinks to a few per cent.
ROUNDS = 5
CONCURRENCIES = (1, 2, 4)
ASSERTED = 2
TARGET = 1.0
OURS_QUEUE = c.FILE_QUEUE
PLAIN_QUEUE = "plain_scaling"


@pytest.fixture
def plain_app(redis_url: str) -> Iterator[Celery]:
    """A plain Celery producer on the test broker."""
    app = plain.make_app(redis_url, PLAIN_QUEUE)
    yield app
    app.close()


def medians(rounds: list[Round], pick: Callable[[Round], tuple[float, float]]) -> list[float]:
    """(median ours, median plain, median of the rounds' ratios) of the picked pair."""
    pairs = [pick(r) for r in rounds]
    return [
        statistics.median(p[0] for p in pairs),
        statistics.median(p[1] for p in pairs),
        statistics.median(p[0] / p[1] for p in pairs),
    ]


def drain_figure(concurrency: int, rounds: list[Round]) -> Figure:
    """The drain figure at ``concurrency``: asserted at ASSERTED, for the record elsewhere."""
    ours, theirs, ratio = medians(rounds, lambda r: r.drain)
    ratios = [round(r.drain[0] / r.drain[1], 3) for r in rounds]
    asserted = concurrency == ASSERTED
    return record(
        Figure(
            benchmark="scaling",
            measure=f"no-op drain, c={concurrency}, side by side",
            ours=round(ours, 1),
            unit="tasks/s",
            anchor=round(theirs, 1),
            anchor_name="plain Celery",
            ratio=round(ratio, 3),
            target=f">= {TARGET}x" if asserted else "",
            met=ratio >= TARGET if asserted else None,
            detail=(
                f"median of {len(rounds)} rounds' ratios {ratios}; common windows "
                f"{min(r.window for r in rounds):.1f}-{max(r.window for r in rounds):.1f} s"
            ),
        )
    )


def test_ours_drains_as_fast_as_plain_celery_at_every_concurrency_and_enqueues_for_the_record(
    producer_app: WorkerApp,
    plain_app: Celery,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    measured: dict[int, list[Round]] = {}
    for concurrency in CONCURRENCIES:
        ours = ours_side(producer_app, start_worker, OURS_QUEUE, concurrency=concurrency)
        theirs = plain_side(plain_app, start_worker, PLAIN_QUEUE, concurrency=concurrency)
        measured[concurrency] = alternating_rounds(producer_app, ours, theirs, N, ROUNDS)
    every_round = [r for rounds in measured.values() for r in rounds]
    ours_enqueue, plain_enqueue, enqueue_ratio = medians(every_round, lambda r: r.enqueue)
    record(
        Figure(
            benchmark="scaling",
            measure="enqueue (send_task vs apply_async), one producer",
            ours=round(ours_enqueue, 1),
            unit="tasks/s",
            anchor=round(plain_enqueue, 1),
            anchor_name="plain Celery",
            ratio=round(enqueue_ratio, 3),
            detail=f"median of {len(every_round)} fills of {N} tasks, alternating order",
        )
    )
    figures = {n: drain_figure(n, rounds) for n, rounds in measured.items()}
    series = {
        "ours": [[float(n), figure.ours] for n, figure in figures.items()],
        "plain Celery": [[float(n), figure.anchor or 0.0] for n, figure in figures.items()],
    }
    low, high = CONCURRENCIES[0], CONCURRENCIES[-1]
    ours_gain = figures[high].ours / figures[low].ours
    plain_gain = (figures[high].anchor or 0.0) / (figures[low].anchor or 1.0)
    record(
        Figure(
            benchmark="scaling",
            measure="no-op drain rate against worker processes",
            ours=figures[high].ours,
            unit="tasks/s",
            anchor=figures[high].anchor,
            anchor_name="plain Celery",
            ratio=figures[high].ratio,
            detail=(
                f"the plot's points: each side's median rate at c={list(CONCURRENCIES)} "
                f"(the figure: c={high}); speed-up from c={low} to c={high}: ours "
                f"{ours_gain:.2f}x, plain Celery {plain_gain:.2f}x"
            ),
            series=series,
            x_label="worker processes",
        )
    )
    assert figures[ASSERTED].met
