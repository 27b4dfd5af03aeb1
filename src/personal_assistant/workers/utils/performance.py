"""Capacity planning: from one queue's measurements, the concurrency, replicas, pool and
max-memory-per-child to run it with, each with the numbers behind it (``celery ... tune``).

The model is an M/M/c queue (utils/queueing.py) over the queue's whole fleet: every slot of
every replica takes from the one broker list. It assumes random (Poisson) arrivals and
run times spread like an exponential; bursts and a long tail make real waits longer, which the
utilisation limit below leaves room for. Prefetch is ignored: a message reserved by a busy
replica waits even if another is idle, which is why the long-running queues prefetch one.

Pure: no Redis, Celery or app imports (DESIGN.md section 2); the command gathers the
measurements (cli/tune_sources.py) and prints what this returns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from personal_assistant.workers import constants as c
from personal_assistant.workers.utils.queueing import (
    MMc,
    mmc,
    servers_to_drain,
    smallest_servers,
)
from personal_assistant.workers.utils.queueing import format_seconds as seconds

# The target is on the 95th percentile of the wait, not its mean: an operator sees the slow
# tail (the e-mail that took a minute), and a mean under target can hide one task in five
# waiting three times as long.
WAIT_QUANTILE: Final = 0.95
# At most 80 % busy. Waits grow as 1 / (1 - rho): from 80 % to 90 % they more than double.
# The arrival rate is an average over a window, so the bursts inside it need the slack too.
MAX_UTILISATION: Final = 0.8
# Seconds that 95 % of a queue's tasks may wait for a slot, from what the queue does:
TARGET_WAIT_S: Final[dict[str, float]] = {
    # Runs take tens of seconds (a model call, AI_TIMEOUT 120 s) on jobs beat claims every
    # 10 minutes: a minute's wait is in proportion to both.
    c.AI_QUEUE: 60.0,
    # A message someone is waiting for; a send takes under a second, half a minute is slow.
    c.EMAIL_QUEUE: 30.0,
    # Temp-file cleanup, nightly or on demand: nobody waits on it, ten minutes are nothing.
    c.FILE_QUEUE: 600.0,
    # Calendar sync runs hourly: two minutes late is invisible against the hour.
    c.SYNC_QUEUE: 120.0,
    # Alert evaluations (every ALERT_EVAL_INTERVAL_S, 15 s) and chord unlocks: waiting longer
    # than one evaluation interval delays every alert.
    c.MAINTENANCE_QUEUE: c.ALERT_EVAL_INTERVAL_S,
}
# Any other queue: a minute, the middle of the domain queues' targets.
DEFAULT_TARGET_WAIT_S: Final = 60.0
# CPU seconds per run-time second above which a task is CPU-bound. Past half, it holds the GIL
# more than it waits: the threads of one process would run such tasks one at a time, so they
# need processes (prefork). Below, a task mostly waits on I/O (a provider, SMTP, a disk), and
# threads give many slots for the memory of one process.
CPU_BOUND_SHARE: Final = 0.5
# Threads per replica at most, for an I/O-bound queue: each slot holds its own connections (to
# the provider, the relay, the database pool); 64 stays inside the usual per-client limits.
THREADS_MAX_PER_REPLICA: Final = 64
# WORKER_MAX_MEMORY_PER_CHILD = peak RSS seen x 1.5: the peak is the largest of the runs
# measured, and the next input may be larger; half as much again lets ordinary runs through,
# while a leak (a child that keeps growing) still passes it and is replaced.
MEMORY_HEADROOM: Final = 1.5
# A backlog the recommended fleet clears within a quarter of an hour is a blip; one that takes
# longer keeps every new task waiting far past its target, so scale out until it is gone.
DRAIN_HORIZON_S: Final = 900.0
_KIB = 1024
_MIB = 1024 * 1024


@dataclass(frozen=True)
class WorkerType:
    """How a queue's worker runs today: pool, slots per replica, WORKER_MAX_MEMORY_PER_CHILD."""

    pool: str
    concurrency: int
    max_memory_per_child_kib: int


# The deployment's worker types (docker/worker-configs/<queue>.env, where each value's reason
# is; a test checks that the two agree). The image does not ship docker/, so they live here.
DEPLOYED_WORKERS: Final[dict[str, WorkerType]] = {
    c.AI_QUEUE: WorkerType("prefork", 1, 512000),
    c.EMAIL_QUEUE: WorkerType("prefork", 4, 256000),
    c.FILE_QUEUE: WorkerType("prefork", 2, 256000),
    c.SYNC_QUEUE: WorkerType("prefork", 2, 384000),
    c.MAINTENANCE_QUEUE: WorkerType("prefork", 2, 196608),
}
# Any other queue: the settings' defaults (WORKER_POOL, WORKER_CONCURRENCY, no memory limit).
DEFAULT_WORKER: Final = WorkerType("prefork", 2, 0)

RUNTIME_BASES: Final = ("mean", "p95")


@dataclass(frozen=True)
class QueueMeasurement:
    """What was measured of one queue; None where nothing was.

    ``arrival_rate`` tasks/s; ``mean_runtime`` s per run (``runtime_basis`` "p95" when only a
    95th percentile was available: an upper bound of the mean, so the plan errs large);
    ``depth`` messages waiting now; ``cpu_seconds_per_task`` CPU used per run;
    ``peak_rss_bytes`` the largest resident size of a child after a run; ``replicas`` the
    workers seen consuming the queue.
    """

    queue: str
    arrival_rate: float | None = None
    mean_runtime: float | None = None
    depth: int | None = None
    cpu_seconds_per_task: float | None = None
    peak_rss_bytes: int | None = None
    replicas: int | None = None
    runtime_basis: str = "mean"

    @property
    def cpu_share(self) -> float | None:
        """CPU seconds per run-time second (None unless both were measured)."""
        if self.cpu_seconds_per_task is None or not self.mean_runtime:
            return None
        return self.cpu_seconds_per_task / self.mean_runtime

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``tune --json``'s ``measured.<queue>``, and ``--from-file``'s)."""
        data = asdict(self)
        del data["queue"]
        return data


@dataclass(frozen=True)
class Plan:
    """A way to run a queue: ``replicas`` workers of ``per_replica`` slots in ``pool``.

    ``concurrency`` is the slots the model asked for; ``replicas * per_replica`` may exceed it
    by less than one slot per replica (slots are spread evenly over the replicas).
    """

    concurrency: int
    replicas: int
    per_replica: int
    pool: str
    max_memory_per_child_kib: int | None

    def describe(self) -> str:
        """``2 x 3 prefork`` style."""
        return f"{self.replicas} x {self.per_replica} {self.pool}"


@dataclass
class Recommendation:
    """One queue's plan: what runs now and how it fares, what to run, and why.

    ``status``: ``ok``; ``overloaded`` (arrivals exceed what runs now: the queue grows
    without bound); ``idle`` (no traffic: keep the minimum); ``unknown`` (no run time
    measured: nothing to model, keep what runs).
    """

    queue: str
    measured: QueueMeasurement
    target_wait: float
    status: str
    current: Plan
    current_model: MMc | None
    recommended: Plan
    model: MMc | None
    backlog: dict[str, Any] | None = None
    why: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``tune --json``'s ``recommendations.<queue>``)."""
        return {
            "status": self.status,
            "target_wait_s": self.target_wait,
            "wait_quantile": WAIT_QUANTILE,
            "max_utilisation": MAX_UTILISATION,
            "current": asdict(self.current),
            "current_model": _model_dict(self.current_model),
            "recommended": asdict(self.recommended),
            "model": _model_dict(self.model),
            "backlog": self.backlog,
            "why": self.why,
            "notes": self.notes,
        }


def _model_dict(model: MMc | None) -> dict[str, Any] | None:
    return None if model is None else model.to_dict(WAIT_QUANTILE)


def max_memory_per_child(
    peak_rss_bytes: int | None, pool: str, current_kib: int
) -> tuple[int | None, str]:
    """WORKER_MAX_MEMORY_PER_CHILD (KiB, as Celery's setting) and why.

    The peak times MEMORY_HEADROOM, rounded up to a whole MiB; None for a pool without
    children (Celery applies the limit to prefork children only).
    """
    if pool != "prefork":
        return None, f"{pool} has no child processes: the limit applies to prefork only"
    if peak_rss_bytes is None or peak_rss_bytes <= 0:
        return current_kib, "no RSS measured: keep the deployed value"
    kib = math.ceil(peak_rss_bytes * MEMORY_HEADROOM / _MIB) * (_MIB // _KIB)
    return kib, (
        f"peak RSS {peak_rss_bytes / _MIB:.0f} MiB x {MEMORY_HEADROOM} headroom = "
        f"{kib} KiB (deployed {current_kib} KiB)"
    )


def choose_pool(cpu_share: float | None, needed: int, worker: WorkerType) -> tuple[str, int, str]:
    """(pool, most slots per replica, why) for a queue that needs ``needed`` slots.

    CPU-bound: prefork at the deployed slots per replica. I/O-bound: prefork still while the
    slots fit in one replica (it keeps the per-child CPU and memory metrics and the hard time
    limit, which the threads pool lacks); beyond, threads: as many as keep one process's GIL
    under MAX_UTILISATION of a core with every slot busy, at most THREADS_MAX_PER_REPLICA.
    """
    if cpu_share is None:
        return worker.pool, worker.concurrency, "no CPU time measured: keep the deployed pool"
    share = f"CPU {cpu_share:.0%} of run time"
    if cpu_share >= CPU_BOUND_SHARE:
        return (
            "prefork",
            worker.concurrency,
            f"{share} >= {CPU_BOUND_SHARE:.0%}: CPU-bound, a process per slot",
        )
    if needed <= worker.concurrency:
        return (
            "prefork",
            worker.concurrency,
            f"{share}: I/O-bound, but {needed} slots fit in one replica's {worker.concurrency} "
            "processes (prefork keeps per-child metrics and the hard time limit)",
        )
    threads = max(1, math.floor(MAX_UTILISATION / cpu_share)) if cpu_share > 0 else math.inf
    per_replica = int(min(THREADS_MAX_PER_REPLICA, max(worker.concurrency, threads)))
    return (
        "threads",
        per_replica,
        f"{share} < {CPU_BOUND_SHARE:.0%}: I/O-bound, threads give {per_replica} slots per "
        "replica for one process's memory (no hard time limit or per-child metrics in threads)",
    )


def spread(concurrency: int, per_replica_max: int, pool: str, memory: int | None) -> Plan:
    """``concurrency`` slots as the fewest replicas of at most ``per_replica_max`` each."""
    per_replica_max = max(1, per_replica_max)
    replicas = max(1, math.ceil(concurrency / per_replica_max))
    per_replica = math.ceil(concurrency / replicas)
    return Plan(concurrency, replicas, per_replica, pool, memory)


def _why_concurrency(queue: MMc, target: float) -> str:
    rule = (
        f"smallest c with rho <= {MAX_UTILISATION} and p{WAIT_QUANTILE * 100:.0f} wait <= "
        f"{seconds(target)}: c={queue.servers} gives {queue.describe(WAIT_QUANTILE)}"
    )
    if queue.servers <= 1:
        return rule
    fewer = mmc(queue.arrival_rate, queue.mean_service_time, queue.servers - 1)
    return f"{rule}; c={fewer.servers} would give {fewer.describe(WAIT_QUANTILE)}"


def _backlog(
    depth: int, model: MMc, plan: Plan, per_replica_max: int
) -> tuple[dict[str, Any], str]:
    """How long ``depth`` waiting tasks take to drain at ``model``'s slots, and the plan that
    drains them within DRAIN_HORIZON_S when that is too long."""
    drain = depth / model.spare_rate
    data: dict[str, Any] = {
        "depth": depth,
        "drain_s": drain,
        "horizon_s": DRAIN_HORIZON_S,
        "within_horizon": drain <= DRAIN_HORIZON_S,
        "drain_plan": None,
    }
    why = f"{depth} waiting: drained in {seconds(drain)} at c={model.servers}"
    if drain > DRAIN_HORIZON_S:
        needed = servers_to_drain(
            model.arrival_rate, model.mean_service_time, depth, DRAIN_HORIZON_S
        )
        drain_plan = spread(needed, per_replica_max, plan.pool, plan.max_memory_per_child_kib)
        data["drain_plan"] = asdict(drain_plan)
        why += (
            f", past the {seconds(DRAIN_HORIZON_S)} horizon: run c={needed} "
            f"({drain_plan.describe()}) until the queue is empty"
        )
    return data, why


def _current(measured: QueueMeasurement, worker: WorkerType, notes: list[str]) -> Plan:
    replicas = measured.replicas or 1
    if not measured.replicas:
        notes.append("no worker seen consuming this queue: one replica assumed for 'now'")
    return Plan(
        replicas * worker.concurrency,
        replicas,
        worker.concurrency,
        worker.pool,
        worker.max_memory_per_child_kib,
    )


def _unmodelled(rec: Recommendation, worker: WorkerType, max_per_replica: int | None) -> None:
    """No traffic (keep the minimum: one replica) or no run time (keep what runs)."""
    measured, runtime = rec.measured, rec.measured.mean_runtime
    if rec.status == "idle":
        per = max_per_replica or worker.concurrency
        memory, rec.why["memory"] = max_memory_per_child(
            measured.peak_rss_bytes, worker.pool, worker.max_memory_per_child_kib
        )
        rec.recommended = Plan(per, 1, per, worker.pool, memory)
        rec.why["concurrency"] = "no traffic: keep the minimum, one replica at its concurrency"
    else:
        rec.why["concurrency"] = "no run time measured: nothing to model, keep what runs"
    if measured.depth and runtime:
        plan = rec.recommended
        model = mmc(0.0, runtime, plan.concurrency)
        rec.backlog, rec.why["backlog"] = _backlog(measured.depth, model, plan, plan.per_replica)
    elif measured.depth:
        rec.why["backlog"] = f"{measured.depth} waiting, and no run time measured"


def recommend(
    measured: QueueMeasurement,
    *,
    target_wait: float | None = None,
    max_per_replica: int | None = None,
    worker: WorkerType | None = None,
) -> Recommendation:
    """The plan for one queue, with the model's numbers and a line of why for each choice.

    ``target_wait`` (s) defaults to TARGET_WAIT_S of the queue; ``max_per_replica`` to the
    pool's (the deployed concurrency, or the thread limit); ``worker`` to DEPLOYED_WORKERS.
    """
    queue = measured.queue
    worker = worker or DEPLOYED_WORKERS.get(queue, DEFAULT_WORKER)
    target = TARGET_WAIT_S.get(queue, DEFAULT_TARGET_WAIT_S) if target_wait is None else target_wait
    notes: list[str] = []
    current = _current(measured, worker, notes)
    arrival, runtime = measured.arrival_rate or 0.0, measured.mean_runtime
    if measured.arrival_rate is None:
        notes.append("no arrival rate measured: taken as no traffic")
    if runtime is not None and measured.runtime_basis == "p95":
        notes.append("run time is a p95 (no mean measured): an upper bound, so the plan errs large")
    current_model = mmc(arrival, runtime, current.concurrency) if runtime else None
    if arrival <= 0 or runtime is None or current_model is None:
        status = "idle" if arrival <= 0 else "unknown"
        rec = Recommendation(
            queue, measured, target, status, current, current_model, current, None, notes=notes
        )
        _unmodelled(rec, worker, max_per_replica)
        rec.why = {"now": _why_now(rec), **rec.why}
        return rec

    model = smallest_servers(
        arrival,
        runtime,
        max_utilisation=MAX_UTILISATION,
        target_wait=target,
        quantile=WAIT_QUANTILE,
    )
    pool, per_replica_max, why_pool = choose_pool(measured.cpu_share, model.servers, worker)
    if max_per_replica is not None:
        per_replica_max = max_per_replica
        why_pool += f"; at most {max_per_replica} slots per replica (--max-concurrency-per-replica)"
    memory, why_memory = max_memory_per_child(
        measured.peak_rss_bytes, pool, worker.max_memory_per_child_kib
    )
    plan = spread(model.servers, per_replica_max, pool, memory)
    status = "ok" if current_model.stable else "overloaded"
    rec = Recommendation(
        queue, measured, target, status, current, current_model, plan, model, notes=notes
    )
    rec.why = {
        "now": _why_now(rec),
        "concurrency": _why_concurrency(model, target),
        "replicas": (
            f"{model.servers} slots, at most {per_replica_max} per replica: {plan.describe()}"
            f" = {plan.replicas * plan.per_replica} slots"
        ),
        "pool": why_pool,
        "memory": why_memory,
    }
    if measured.depth:
        rec.backlog, rec.why["backlog"] = _backlog(measured.depth, model, plan, per_replica_max)
    return rec


def _why_now(rec: Recommendation) -> str:
    slots = f"{rec.current.describe()} (slots: {rec.current.concurrency})"
    if rec.current_model is None or rec.status == "idle":
        return f"{slots}: {'no traffic' if rec.status == 'idle' else 'no run time to model'}"
    return f"{slots}: {rec.current_model.describe(WAIT_QUANTILE)}"
