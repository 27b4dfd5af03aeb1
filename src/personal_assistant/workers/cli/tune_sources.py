"""Where ``celery ... tune`` gets its measurements: the broker's Redis, Prometheus, or a file.

Each source returns ``{queue: QueueMeasurement}`` (utils/performance.py) or raises a one-line
error (cli/terminal.py): :class:`Unavailable` (exit 69, EX_UNAVAILABLE, as Celery uses) when the
source does not answer, :class:`BadArgument` (exit 64, EX_USAGE) for a file or option that
cannot be used, :class:`NoData` (exit 1) when the source answered but holds nothing to plan
from. URLs in messages are masked.

- Redis (default): the workers' metric snapshots (metrics/snapshots.py, one per worker every
  10 s), queue depths of every priority list, and heartbeats for the replicas. The arrival
  rate is the runs finished per second between a worker's last two snapshots (fresh workers
  only), which is the arrival rate only while the queue keeps up. The snapshots carry each
  task's count, failures and p95; a mean run time (``avg_time``), CPU (``avg_cpu_time``) and
  peak RSS (``max_memory``) are used when a snapshot has them, and without ``avg_time`` the
  p95 stands in for the mean (an upper bound: the plan errs large, and says so).
- Prometheus (``--prometheus URL``): the exported series over ``--window`` (QUERIES below).
- A file (``--from-file``): ``{queue: {field: value}}``, the shape ``tune --json`` prints under
  ``measured`` (or that whole output: its ``measured`` is used).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.cli.ops_command import reason, redis_errors
from personal_assistant.workers.cli.terminal import CommandFailed, Unavailable, UsageError
from personal_assistant.workers.config import mask_httpx_request_urls, mask_url
from personal_assistant.workers.metrics.snapshots import read_snapshots, task_rates
from personal_assistant.workers.monitoring.liveness import WorkerRegistry
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.routing import queue_for_task
from personal_assistant.workers.utils.performance import RUNTIME_BASES, QueueMeasurement

__all__ = ["BadArgument", "NoData", "Unavailable"]

# A worker's snapshot older than this is from a worker that stopped writing (they write every
# 10 s): its last rate is history, not the present (pa-status uses the same limit).
STALE_AFTER_S: Final = 120.0
# Prometheus answers an instant query in milliseconds; ten seconds means it is not answering.
PROMETHEUS_TIMEOUT_S: Final = 10.0
# A file of measurements is a few hundred bytes per queue; a megabyte is not one.
MAX_FILE_BYTES: Final = 1024 * 1024
# Prometheus's duration syntax (15m, 1h30m, 90s).
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# One query per measured field, by queue_name; {w} is the window. The arrival rate is the
# larger of sent (counted at publish: the true arrivals, but only of publishers with the
# app's hooks) and received (counted by the workers: short of the arrivals while a queue grows).
QUERIES: Final[dict[str, str]] = {
    "sent": "sum by (queue_name) (rate(celery_task_sent_total[{w}]))",
    "received": "sum by (queue_name) (rate(celery_task_received_total[{w}]))",
    "mean_runtime": (
        "sum by (queue_name) (rate(celery_task_runtime_sum[{w}]))"
        " / sum by (queue_name) (rate(celery_task_runtime_count[{w}]))"
    ),
    "cpu_seconds_per_task": (
        "sum by (queue_name) (rate(celery_task_cpu_seconds_total[{w}]))"
        " / sum by (queue_name) (rate(celery_task_runtime_count[{w}]))"
    ),
    "depth": "max by (queue_name) (celery_queue_length)",
    "peak_rss_bytes": "max by (queue_name) (max_over_time(celery_task_max_rss_bytes[{w}]))",
    "replicas": (
        "count by (queue_name) (count by (queue_name, hostname) (celery_task_received_total))"
    ),
}
_FIELDS: Final = {
    "arrival_rate": float,
    "mean_runtime": float,
    "depth": int,
    "cpu_seconds_per_task": float,
    "peak_rss_bytes": int,
    "replicas": int,
    "runtime_basis": str,
}


class BadArgument(UsageError):
    """A file of measurements (or an option) that cannot be used: exit code 64, EX_USAGE (what
    the command line names is wrong; 1 is for a source without data)."""


class NoData(CommandFailed):
    """The source answered but holds nothing to plan from: exit code 1."""


def window_seconds(window: str) -> float:
    """Seconds of a Prometheus duration (``15m``); ValueError for anything else."""
    if not _DURATION.match(window):
        raise ValueError(f"{window!r} is not a Prometheus duration (e.g. 15m, 1h, 90s)")
    return sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(window))


def measurement_from_dict(queue: str, data: Any) -> QueueMeasurement:
    """A queue's measurements from their JSON form; ValueError naming the field of a bad one."""
    if not isinstance(data, dict):
        raise ValueError(f"{queue}: expected an object of measurements")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{queue}: unknown field {unknown[0]!r} (known: {', '.join(_FIELDS)})")
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = _FIELDS[name]
        if value is None:
            continue
        if kind is str:
            if value not in RUNTIME_BASES:
                raise ValueError(f"{queue}.{name}: one of {', '.join(RUNTIME_BASES)}")
            values[name] = value
            continue
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or not math.isfinite(value) or value < 0:
            raise ValueError(f"{queue}.{name}: a finite number >= 0 (got {value!r})")
        if kind is int and value != int(value):
            raise ValueError(f"{queue}.{name}: a whole number (got {value!r})")
        values[name] = kind(value)
    if values.get("mean_runtime") == 0:
        raise ValueError(f"{queue}.mean_runtime: must be > 0")
    return QueueMeasurement(queue=queue, **values)


def from_file(path: str) -> dict[str, QueueMeasurement]:
    """Measurements from a JSON file (``tune --json``'s ``measured``, or its whole output)."""
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadArgument(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise BadArgument(f"{path}: larger than {MAX_FILE_BYTES} bytes, not a measurements file")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadArgument(f"{path}: not JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("measured"), dict):
        data = data["measured"]
    if not isinstance(data, dict) or not data:
        raise BadArgument(f"{path}: expected an object of queues, {{queue: {{measurements}}}}")
    try:
        return {str(q): measurement_from_dict(str(q), m) for q, m in sorted(data.items())}
    except ValueError as exc:
        raise BadArgument(f"{path}: {exc}") from None


# --- Redis -----------------------------------------------------------------------------------


class _Totals:
    """One queue's sums over every (worker, task) of the snapshots."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self.count = self.timed = self.p95_count = self.cpu_count = 0
        self.time = self.p95 = self.cpu = 0.0
        self.rss: int | None = None

    def add(self, stats: Mapping[str, Any], rate: float | None) -> None:
        if rate is not None:
            self.rate = (self.rate or 0.0) + rate
        count = int(stats.get("count", 0) or 0)
        self.count += count

        def number(key: str) -> float | None:
            value = stats.get(key)
            if count <= 0 or isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value)

        if (avg := number("avg_time")) is not None:
            self.time, self.timed = self.time + avg * count, self.timed + count
        if (p95 := number("p95")) is not None:
            self.p95, self.p95_count = self.p95 + p95 * count, self.p95_count + count
        if (cpu := number("avg_cpu_time")) is not None:
            self.cpu, self.cpu_count = self.cpu + cpu * count, self.cpu_count + count
        if (rss := number("max_memory")) is not None:
            self.rss = max(self.rss or 0, int(rss))

    def measurement(self, queue: str, depth: int, replicas: int) -> QueueMeasurement:
        runtime, basis = None, "mean"
        if self.timed and self.time > 0:
            runtime = self.time / self.timed
        elif self.p95_count and self.p95 > 0:
            runtime, basis = self.p95 / self.p95_count, "p95"
        return QueueMeasurement(
            queue=queue,
            arrival_rate=self.rate,
            mean_runtime=runtime,
            depth=depth,
            cpu_seconds_per_task=self.cpu / self.cpu_count if self.cpu_count else None,
            peak_rss_bytes=self.rss,
            replicas=replicas or None,
            runtime_basis=basis,
        )


def from_redis(
    client: redis.Redis, now: float, *, down_after: float, stale_after: float = STALE_AFTER_S
) -> dict[str, QueueMeasurement]:
    """Per queue, from the workers' snapshots, the queue depths and the heartbeats."""
    snapshots = read_snapshots(client, now)
    if not snapshots:
        raise NoData(
            "no metric snapshots in the broker's Redis: workers write them every 10 s with "
            "METRICS_ENABLED=true (or plan from --prometheus URL or --from-file FILE)"
        )
    totals = {queue: _Totals() for queue in c.QUEUES}
    for current, prev in snapshots.values():
        fresh = now - current["ts"] <= stale_after
        rates = task_rates(current, prev) if fresh else {}
        for name, stats in current["tasks"].items():
            queue = queue_for_task(name)
            totals.setdefault(queue, _Totals()).add(dict(stats), rates.get(name))
    depths = queue_depths(client, list(totals))
    replicas = dict.fromkeys(totals, 0)
    for worker in WorkerRegistry(client, down_after=down_after).workers(now):
        for queue in worker.queues if worker.up else ():
            replicas[queue] = replicas.get(queue, 0) + 1
    return {
        queue: total.measurement(queue, depths.get(queue, 0), replicas.get(queue, 0))
        for queue, total in sorted(totals.items())
    }


# --- Prometheus ------------------------------------------------------------------------------


def _query(client: httpx.Client, base: str, promql: str) -> dict[str, float]:
    """One instant query's value by queue_name (NaN and infinite values left out)."""
    shown = mask_url(base)
    try:
        response = client.get(f"{base}/api/v1/query", params={"query": promql})
    except httpx.TransportError as exc:
        raise Unavailable(f"cannot reach Prometheus at {shown}: {reason(exc)}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise NoData(
            f"Prometheus at {shown} answered {response.status_code} to {promql!r}: "
            f"{error or 'not a Prometheus API response'}"
        )
    values: dict[str, float] = {}
    for sample in body.get("data", {}).get("result", []):
        try:
            queue = str(sample["metric"].get("queue_name", ""))
            value = float(sample["value"][1])
        except (KeyError, TypeError, ValueError, IndexError):
            continue
        if queue and math.isfinite(value):
            values[queue] = value
    return values


def from_prometheus(base_url: str, window: str) -> dict[str, QueueMeasurement]:
    """Per queue, from the exported series over ``window`` (QUERIES)."""
    base = base_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise BadArgument(f"--prometheus: an http(s) URL (got {mask_url(base_url)})")
    mask_httpx_request_urls()  # httpx logs each request's URL, credentials and all
    with httpx.Client(timeout=PROMETHEUS_TIMEOUT_S) as client:
        found = {
            key: _query(client, base, promql.format(w=window)) for key, promql in QUERIES.items()
        }
    if not any(found[key] for key in ("sent", "received", "mean_runtime")):
        raise NoData(
            f"Prometheus at {mask_url(base)} has no celery_task_* series over the last {window}: "
            "is it scraping the workers?"
        )
    return {queue: _measurement(queue, found) for queue in _queues(found.values())}


def _queues(found: Iterable[Mapping[str, float]]) -> list[str]:
    return sorted(set(c.QUEUES).union(*found))


def _measurement(queue: str, found: Mapping[str, Mapping[str, float]]) -> QueueMeasurement:
    arrivals = [found[key][queue] for key in ("sent", "received") if queue in found[key]]

    def whole(key: str) -> int | None:
        value = found[key].get(queue)
        return None if value is None else round(value)

    return QueueMeasurement(
        queue=queue,
        arrival_rate=max(arrivals) if arrivals else None,
        mean_runtime=found["mean_runtime"].get(queue) or None,
        depth=whole("depth"),
        cpu_seconds_per_task=found["cpu_seconds_per_task"].get(queue),
        peak_rss_bytes=whole("peak_rss_bytes"),
        replicas=whole("replicas"),
    )


def check_broker(client: redis.Redis, url: str) -> None:
    """Ping the broker's Redis: Unavailable (exit 69) with the URL masked if it does not answer."""
    with redis_errors(url):
        client.ping()
