"""Capacity recommendations of utils/performance.py on measurements with known answers.

The queue of most tests is the hand-computed M/M/c case of test_queueing.py: 8 tasks/s of
0.5 s runs (a = 4 busy slots). With 5 slots rho = 0.8, P(wait) = 128/231 = 0.554, the mean
wait 0.277 s and the p95 wait 1.20 s; with 6 slots the p95 wait is 0.435 s; with 4 the queue is
overloaded (rho = 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.utils.performance import (
    DEPLOYED_WORKERS,
    DRAIN_HORIZON_S,
    TARGET_WAIT_S,
    THREADS_MAX_PER_REPLICA,
    QueueMeasurement,
    WorkerType,
    choose_pool,
    max_memory_per_child,
    recommend,
    spread,
)

REPO = Path(__file__).resolve().parents[3]
MIB = 1024 * 1024
EMAIL_LIKE = WorkerType("prefork", 4, 256000)


def measured(**fields: float | int | str | None) -> QueueMeasurement:
    """The hand-computed queue, CPU-bound unless told otherwise, seen on one replica."""
    base: dict[str, float | int | str | None] = {
        "arrival_rate": 8.0,
        "mean_runtime": 0.5,
        "depth": 0,
        "cpu_seconds_per_task": 0.4,
        "peak_rss_bytes": 100 * MIB,
        "replicas": 1,
    }
    base.update(fields)
    return QueueMeasurement("email_tasks", **base)  # type: ignore[arg-type]


def test_tune_recommends_the_smallest_concurrency_meeting_the_target() -> None:
    rec = recommend(measured(), target_wait=1.5, worker=EMAIL_LIKE)

    assert rec.model is not None
    assert rec.recommended.concurrency == 5  # p95 wait 1.20 s <= 1.5 s, rho 0.8
    assert rec.model.utilisation == pytest.approx(0.8)
    assert rec.model.p_wait == pytest.approx(128 / 231, abs=1e-6)
    assert rec.model.mean_wait == pytest.approx(0.277056277, abs=1e-6)
    # c - 1 = 4 fails: rho = 1, overloaded; the why line says so with its numbers.
    assert "c=5 gives rho 0.80, p95 wait 1.2 s" in rec.why["concurrency"]
    assert "c=4 would give rho 1.00: overloaded" in rec.why["concurrency"]


def test_tune_asks_one_slot_more_when_the_wait_target_is_tighter() -> None:
    rec = recommend(measured(), target_wait=1.0, worker=EMAIL_LIKE)
    assert rec.recommended.concurrency == 6  # c=5 waits 1.20 s at p95, c=6 0.43 s
    assert "c=5 would give rho 0.80, p95 wait 1.2 s" in rec.why["concurrency"]


def test_tune_spreads_the_slots_over_replicas_of_the_deployed_concurrency() -> None:
    rec = recommend(measured(), target_wait=1.5, worker=EMAIL_LIKE)
    plan = rec.recommended
    assert (plan.replicas, plan.per_replica, plan.pool) == (2, 3, "prefork")
    assert "at most 4 per replica: 2 x 3 prefork = 6 slots" in rec.why["replicas"]


def test_tune_takes_the_per_replica_limit_from_the_option() -> None:
    rec = recommend(measured(), target_wait=1.5, worker=EMAIL_LIKE, max_per_replica=5)
    assert (rec.recommended.replicas, rec.recommended.per_replica) == (1, 5)


def test_tune_says_the_current_setup_is_overloaded() -> None:
    rec = recommend(measured(), target_wait=1.5, worker=EMAIL_LIKE)  # 1 x 4 slots now
    assert rec.status == "overloaded"
    assert rec.current_model is not None and not rec.current_model.stable
    assert "grows without bound" in rec.why["now"]
    data = rec.to_dict()
    json.dumps(data, allow_nan=False)  # infinite waits are null, not Infinity
    assert data["current_model"]["mean_wait"] is None


def test_tune_reports_ok_with_the_model_at_the_current_setup() -> None:
    rec = recommend(measured(replicas=2), target_wait=1.5, worker=EMAIL_LIKE)  # 8 slots now
    assert rec.status == "ok"
    assert rec.current_model is not None
    assert rec.current_model.utilisation == pytest.approx(0.5)


def test_tune_keeps_the_minimum_for_a_queue_without_traffic() -> None:
    rec = recommend(measured(arrival_rate=0.0), worker=EMAIL_LIKE)
    assert rec.status == "idle"
    assert rec.model is None
    assert (rec.recommended.replicas, rec.recommended.per_replica) == (1, 4)
    assert "keep the minimum" in rec.why["concurrency"]


def test_tune_drains_a_backlog_of_an_idle_queue_at_the_minimum() -> None:
    rec = recommend(measured(arrival_rate=0.0, depth=40), worker=EMAIL_LIKE)
    assert rec.backlog is not None
    assert rec.backlog["drain_s"] == pytest.approx(40 / (4 / 0.5))  # 4 slots at 2 runs/s each


def test_tune_without_a_run_time_keeps_what_runs() -> None:
    rec = recommend(measured(mean_runtime=None), worker=EMAIL_LIKE)
    assert rec.status == "unknown"
    assert rec.recommended == rec.current
    assert "no run time measured" in rec.why["concurrency"]


def test_tune_plans_a_temporary_scale_out_for_a_backlog_past_the_horizon() -> None:
    rec = recommend(measured(depth=30_000), target_wait=1.5, worker=EMAIL_LIKE)
    assert rec.backlog is not None
    # At c=5: c mu - lambda = 2 tasks/s spare, 30,000 / 2 = 15,000 s to drain.
    assert rec.backlog["drain_s"] == pytest.approx(15_000)
    assert rec.backlog["within_horizon"] is False
    # (8 + 30,000/900) * 0.5 = 20.67 -> 21 slots, 6 replicas of at most 4 -> 6 x 4.
    assert rec.backlog["drain_plan"]["concurrency"] == 21
    assert (rec.backlog["drain_plan"]["replicas"], rec.backlog["drain_plan"]["per_replica"]) == (
        6,
        4,
    )
    assert f"past the {DRAIN_HORIZON_S / 60:.1f} min horizon" in rec.why["backlog"]


def test_tune_says_a_small_backlog_drains_within_the_horizon() -> None:
    rec = recommend(measured(depth=100), target_wait=1.5, worker=EMAIL_LIKE)
    assert rec.backlog is not None
    assert rec.backlog["within_horizon"] is True
    assert rec.backlog["drain_plan"] is None
    assert rec.backlog["drain_s"] == pytest.approx(50.0)


def test_tune_keeps_prefork_for_a_cpu_bound_queue() -> None:
    pool, per_replica, why = choose_pool(0.6, needed=10, worker=EMAIL_LIKE)
    assert (pool, per_replica) == ("prefork", 4)
    assert "CPU-bound" in why


def test_tune_keeps_prefork_for_an_io_bound_queue_that_fits_one_replica() -> None:
    pool, per_replica, why = choose_pool(0.1, needed=3, worker=EMAIL_LIKE)
    assert (pool, per_replica) == ("prefork", 4)
    assert "I/O-bound, but 3 slots fit" in why


def test_tune_recommends_threads_for_an_io_bound_queue_that_needs_more_slots() -> None:
    # 10 % CPU per busy slot: 0.8 core / 0.1 = 8 threads per replica keep the GIL at 80 %.
    pool, per_replica, _ = choose_pool(0.1, needed=10, worker=EMAIL_LIKE)
    assert (pool, per_replica) == ("threads", 8)
    pool, per_replica, _ = choose_pool(0.0, needed=500, worker=EMAIL_LIKE)
    assert (pool, per_replica) == ("threads", THREADS_MAX_PER_REPLICA)


def test_tune_keeps_the_deployed_pool_without_a_cpu_measurement() -> None:
    pool, per_replica, why = choose_pool(None, needed=10, worker=WorkerType("threads", 8, 0))
    assert (pool, per_replica) == ("threads", 8)
    assert "no CPU time measured" in why


def test_tune_recommends_threads_end_to_end_for_an_io_bound_queue() -> None:
    rec = recommend(measured(cpu_seconds_per_task=0.05), target_wait=1.0, worker=EMAIL_LIKE)
    # 10 % CPU, 6 slots needed > 4 processes: threads, 8 per replica -> 1 x 6, no child limit.
    assert rec.recommended == spread(6, 8, "threads", None)
    assert rec.recommended.max_memory_per_child_kib is None


def test_tune_sets_max_memory_per_child_with_headroom_over_the_peak() -> None:
    # 100 MiB x 1.5 = 150 MiB = 153,600 KiB.
    assert max_memory_per_child(100 * MIB, "prefork", 256000)[0] == 150 * 1024
    # 100,000,000 B x 1.5 = 143.05 MiB, rounded up to 144 MiB = 147,456 KiB.
    kib, why = max_memory_per_child(100_000_000, "prefork", 256000)
    assert kib == 147_456
    assert "deployed 256000 KiB" in why


def test_tune_keeps_the_deployed_memory_limit_without_an_rss_measurement() -> None:
    assert max_memory_per_child(None, "prefork", 256000) == (
        256000,
        "no RSS measured: keep the deployed value",
    )
    assert max_memory_per_child(100 * MIB, "threads", 256000)[0] is None


def test_tune_notes_a_p95_run_time_as_an_upper_bound() -> None:
    rec = recommend(measured(runtime_basis="p95"), target_wait=1.5, worker=EMAIL_LIKE)
    assert any("upper bound" in note for note in rec.notes)


def test_tune_spread_uses_the_fewest_replicas_with_even_slots() -> None:
    assert spread(5, 4, "prefork", 1) == spread(5, 3, "prefork", 1)  # both 2 x 3
    assert (spread(9, 4, "prefork", 1).replicas, spread(9, 4, "prefork", 1).per_replica) == (3, 3)
    assert spread(1, 64, "threads", None).describe() == "1 x 1 threads"


def test_every_domain_queue_has_a_target_wait_and_a_deployed_worker() -> None:
    assert set(TARGET_WAIT_S) == set(c.QUEUES) == set(DEPLOYED_WORKERS)


def _env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


@pytest.mark.parametrize("queue", c.QUEUES)
def test_deployed_workers_match_the_worker_configs(queue: str) -> None:
    """DEPLOYED_WORKERS copies docker/worker-configs/<queue>.env (the image lacks docker/)."""
    env = _env(REPO / "docker" / "worker-configs" / f"{queue.removesuffix('_tasks')}.env")
    worker = DEPLOYED_WORKERS[queue]
    assert worker.pool == env["WORKER_POOL"]
    assert worker.concurrency == int(env["WORKER_CONCURRENCY"])
    assert worker.max_memory_per_child_kib == int(env["WORKER_MAX_MEMORY_PER_CHILD"])
