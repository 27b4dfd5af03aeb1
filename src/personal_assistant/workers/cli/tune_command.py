"""``celery -A personal_assistant.workers.celery_app tune``: capacity planning per queue.

From each queue's measured arrival rate, mean run time, depth, CPU and memory (the broker's
Redis by default, or ``--prometheus URL``, or ``--from-file FILE``: cli/tune_sources.py), an
M/M/c model (utils/queueing.py) gives the smallest concurrency whose utilisation is at most 80 %
and whose 95th-percentile wait is within the queue's target, mapped onto replicas x slots per
replica, with the pool and WORKER_MAX_MEMORY_PER_CHILD (utils/performance.py says why each
limit is what it is). Every recommendation prints the numbers behind it and a line of why.

``--json`` prints one object::

    {
      "generated_at": <unix seconds>,
      "source": {"kind": "redis" | "prometheus" | "file", "url": <masked> | null,
                 "window": "15m" | null, "file": <path> | null},
      "settings": {"wait_quantile": 0.95, "max_utilisation": 0.8, "drain_horizon_s": 900,
                   "cpu_bound_share": 0.5, "memory_headroom": 1.5,
                   "max_concurrency_per_replica": <int> | null},
      "measured": {<queue>: {"arrival_rate": <tasks/s>, "mean_runtime": <s>, "depth": <int>,
                   "cpu_seconds_per_task": <s>, "peak_rss_bytes": <int>, "replicas": <int>,
                   "runtime_basis": "mean" | "p95"}},          (any value may be null)
      "recommendations": {<queue>: {
          "status": "ok" | "overloaded" | "idle" | "unknown",
          "target_wait_s", "wait_quantile", "max_utilisation",
          "current" / "recommended": {"concurrency", "replicas", "per_replica", "pool",
                                      "max_memory_per_child_kib"},
          "current_model" / "model": null | {"arrival_rate", "mean_service_time", "servers",
              "offered_load", "utilisation", "p_wait", "mean_wait", "quantile",
              "quantile_wait", "in_service", "queue_length", "in_system", "stable"},
          "backlog": null | {"depth", "drain_s", "horizon_s", "within_horizon",
                             "drain_plan": null | <plan>},
          "why": {"now", "concurrency", "replicas", "pool", "memory", "backlog": <one line>},
          "notes": [<line>]}}
    }

Infinite waits (an overloaded queue) are null. ``measured`` is what ``--from-file`` reads, so
a saved output can be edited and planned again ("what if arrivals double?").

Exit codes (as every ops command's, cli/schedule_options.py): 0; 1 when the source holds
nothing to plan from; 64 (EX_USAGE) for a bad option value or file; 2 for click's own usage
errors (an unknown option); 69 (EX_UNAVAILABLE, as Celery) when Redis or Prometheus does not
answer. Each error is one line on stderr, ``Error: ...``, URLs masked.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from personal_assistant.workers.cli import tune_sources as sources
from personal_assistant.workers.cli.ops_command import OpsCommand
from personal_assistant.workers.cli.terminal import CommandFailed, console
from personal_assistant.workers.config import is_redis_url, mask_url
from personal_assistant.workers.redis_clients import client_for
from personal_assistant.workers.utils import performance as perf
from personal_assistant.workers.utils.queueing import format_seconds

if TYPE_CHECKING:
    from personal_assistant.workers.utils.queueing import MMc
    from personal_assistant.workers.worker_app import WorkerApp

COMMAND_NAME = "tune"
_MIB = 1024 * 1024


def _target_waits(values: tuple[str, ...], queues: list[str]) -> dict[str, float]:
    """``--target-wait`` values, ``SECONDS`` (every queue) or ``QUEUE=SECONDS``."""
    waits: dict[str, float] = {}
    for value in values:
        queue, _, number = value.rpartition("=")
        try:
            seconds = float(number)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise sources.BadArgument(f"--target-wait {value!r}: [QUEUE=]SECONDS, seconds >= 0")
        if queue and queue not in queues:
            raise sources.BadArgument(f"--target-wait: no measurements of queue {queue!r}")
        for name in [queue] if queue else queues:
            waits[name] = seconds
    return waits


def _measure_redis(ctx: click.Context) -> tuple[dict[str, perf.QueueMeasurement], str]:
    app: WorkerApp = ctx.obj.app
    url = str(app.conf.broker_url)
    if not is_redis_url(url):
        raise sources.BadArgument(
            f"tune reads the broker's Redis by default, and the broker is {mask_url(url)}: "
            "use --prometheus URL or --from-file FILE"
        )
    client = client_for(url)
    sources.check_broker(client, url)
    # A Redis error later on is one line too: tune is an OpsCommand.
    measured = sources.from_redis(
        client, time.time(), down_after=float(app.settings.worker_down_after)
    )
    return measured, url


def plan(
    measured: dict[str, perf.QueueMeasurement],
    *,
    target_waits: dict[str, float] | None = None,
    max_per_replica: int | None = None,
) -> dict[str, perf.Recommendation]:
    """A recommendation per measured queue."""
    waits = target_waits or {}
    return {
        queue: perf.recommend(m, target_wait=waits.get(queue), max_per_replica=max_per_replica)
        for queue, m in measured.items()
    }


def report(
    measured: dict[str, perf.QueueMeasurement],
    recommendations: dict[str, perf.Recommendation],
    source: dict[str, Any],
    max_per_replica: int | None,
) -> dict[str, Any]:
    """Everything ``tune --json`` prints (the shape is in the module's docstring)."""
    return {
        "generated_at": time.time(),
        "source": source,
        "settings": {
            "wait_quantile": perf.WAIT_QUANTILE,
            "max_utilisation": perf.MAX_UTILISATION,
            "drain_horizon_s": perf.DRAIN_HORIZON_S,
            "cpu_bound_share": perf.CPU_BOUND_SHARE,
            "memory_headroom": perf.MEMORY_HEADROOM,
            "max_concurrency_per_replica": max_per_replica,
        },
        "measured": {queue: m.to_dict() for queue, m in measured.items()},
        "recommendations": {queue: r.to_dict() for queue, r in recommendations.items()},
    }


def _maybe(value: float | None, form: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{form}}{unit}"


def _measured_rows(m: perf.QueueMeasurement) -> list[tuple[str, str, str]]:
    share = m.cpu_share
    bound = ""
    if share is not None:
        bound = "CPU-bound" if share >= perf.CPU_BOUND_SHARE else "I/O-bound"
        bound += f" (at {perf.CPU_BOUND_SHARE:.0%})"
    runtime = _maybe(m.mean_runtime, ".3f", " s")
    rss = None if m.peak_rss_bytes is None else m.peak_rss_bytes / _MIB
    return [
        ("arrival rate (lambda)", _maybe(m.arrival_rate, ".3f", " /s"), "tasks per second"),
        (
            "run time (1/mu)",
            runtime if m.runtime_basis == "mean" else f"<= {runtime} (p95)",
            "not measured"
            if m.mean_runtime is None
            else "mean of the runs"
            if m.runtime_basis == "mean"
            else "no mean measured: p95 used",
        ),
        ("queue depth", _maybe(m.depth, "d"), "waiting now"),
        ("CPU per run time", "-" if share is None else f"{share:.0%}", bound),
        ("peak RSS", _maybe(rss, ".0f", " MiB"), "of a child, after a run"),
        ("replicas seen", _maybe(m.replicas, "d"), "workers up on the queue"),
    ]


def _model_rows(model: MMc) -> list[tuple[str, str, str]]:
    wait = model.wait_quantile(perf.WAIT_QUANTILE)
    return [
        ("offered load (a = lambda/mu)", f"{model.offered_load:.2f}", "mean slots busy"),
        ("utilisation (rho = a/c)", f"{model.utilisation:.2f}", f"at c={model.servers}"),
        ("P(wait) (Erlang C)", f"{model.p_wait:.3f}", "tasks that wait"),
        ("mean wait (Wq)", format_seconds(model.mean_wait), "C / (c mu - lambda)"),
        (
            f"p{perf.WAIT_QUANTILE * 100:.0f} wait",
            format_seconds(wait),
            "C e^-(c mu - lambda)t = 5%",
        ),
        (
            "Little's law (L = lambda W)",
            f"{model.in_service:.2f} running + {model.queue_length:.2f} queued",
            f"= {model.in_system:.2f} in the system",
        ),
    ]


WHY_ORDER = ("now", "concurrency", "replicas", "pool", "memory", "backlog")


def _queue_table(rec: perf.Recommendation) -> Table:
    table = Table(
        title=(
            f"{rec.queue}: {rec.status.upper()} (target: {perf.WAIT_QUANTILE:.0%} of waits "
            f"<= {format_seconds(rec.target_wait)}, rho <= {perf.MAX_UTILISATION})"
        ),
        title_justify="left",
    )
    table.add_column("", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("how", overflow="fold")
    for row in _measured_rows(rec.measured):
        table.add_row(*row)
    table.add_section()
    if rec.model is not None:
        for row in _model_rows(rec.model):
            table.add_row(*row)
        table.add_section()
    plan_, memory = rec.recommended, rec.recommended.max_memory_per_child_kib
    table.add_row("now", rec.current.describe(), f"slots: {rec.current.concurrency}")
    table.add_row("recommended concurrency", str(plan_.concurrency), "slots in all")
    table.add_row("replicas x per replica", f"{plan_.replicas} x {plan_.per_replica}", "")
    table.add_row("pool", plan_.pool, "")
    table.add_row("max-memory-per-child", "-" if memory is None else f"{memory} KiB", "")
    if rec.backlog is not None:
        table.add_row("backlog drains in", format_seconds(rec.backlog["drain_s"]), "")
    return table


def _print(recommendations: dict[str, perf.Recommendation], source: str) -> None:
    out = console()  # the terminal's width: tables and why lines fold to fit
    out.print(f"[bold]measured from[/bold] {source}", highlight=False)
    for rec in recommendations.values():
        out.print(_queue_table(rec))
        for key in WHY_ORDER:
            if key in rec.why:
                out.print(f"  [bold]why {key}:[/bold] {rec.why[key]}", highlight=False)
        for note in rec.notes:
            out.print(f"  [bold]note:[/bold] {note}", highlight=False)
        out.print()
    summary = Table(title="Summary", title_justify="left")
    for column in ("queue", "status", "lambda/s", "1/mu s", "now", "plan", "mem KiB"):
        left = column in ("queue", "status")
        summary.add_column(column, justify="left" if left else "right", no_wrap=left)
    for queue, rec in recommendations.items():
        memory = rec.recommended.max_memory_per_child_kib
        summary.add_row(
            queue,
            rec.status,
            _maybe(rec.measured.arrival_rate, ".3f"),
            _maybe(rec.measured.mean_runtime, ".3f"),
            rec.current.describe(),
            rec.recommended.describe(),
            "-" if memory is None else str(memory),
        )
    out.print(summary)


@click.command(name=COMMAND_NAME, cls=OpsCommand)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (its shape is above).")
@click.option(
    "--prometheus",
    "prometheus_url",
    metavar="URL",
    help="Measure from this Prometheus (its HTTP API) instead of the broker's Redis.",
)
@click.option(
    "--window",
    default="15m",
    show_default=True,
    help="With --prometheus: the range of the rates (a Prometheus duration).",
)
@click.option(
    "--from-file",
    "file_path",
    metavar="FILE",
    help="Measurements from a JSON file (tune --json's 'measured'), for what-if planning.",
)
@click.option(
    "--target-wait",
    "target_waits",
    multiple=True,
    metavar="[QUEUE=]SECONDS",
    help=f"Seconds that {perf.WAIT_QUANTILE:.0%} of tasks wait at most [default: per queue: "
    + ", ".join(f"{q.removesuffix('_tasks')} {s:g}" for q, s in perf.TARGET_WAIT_S.items())
    + f"; others {perf.DEFAULT_TARGET_WAIT_S:g}]. Repeatable.",
)
@click.option(
    "--max-concurrency-per-replica",
    "max_per_replica",
    type=click.IntRange(min=1),
    help="Slots per replica at most [default: the worker type's deployed WORKER_CONCURRENCY;"
    " for threads, as many as keep one core 80 % busy, at most 64].",
)
@click.pass_context
def tune(  # noqa: PLR0917 - click passes each option as an argument
    ctx: click.Context,
    as_json: bool,
    prometheus_url: str | None,
    window: str,
    file_path: str | None,
    target_waits: tuple[str, ...],
    max_per_replica: int | None,
) -> None:
    """Recommend concurrency, replicas, pool and max-memory-per-child per queue (M/M/c).

    Measures each queue's arrival rate, mean run time, depth, CPU and peak RSS (from the
    broker's Redis, --prometheus or --from-file), finds the fewest slots with utilisation
    <= 80 % and a p95 wait within the target, and prints the numbers behind each choice.

    \b
    --json prints one object:
      {"generated_at", "source", "settings",
       "measured": {QUEUE: {"arrival_rate", "mean_runtime", "depth",
                            "cpu_seconds_per_task", "peak_rss_bytes", "replicas",
                            "runtime_basis"}},
       "recommendations": {QUEUE: {"status", "target_wait_s", "current",
                                   "current_model", "recommended", "model",
                                   "backlog", "why", "notes"}}}
    "measured" is what --from-file reads. Exit codes: 1 no data, 64 bad option
    value or file, 2 unknown option, 69 Redis or Prometheus unreachable.
    """
    if prometheus_url and file_path:
        raise sources.BadArgument("--prometheus and --from-file are two sources: choose one")
    source: dict[str, Any] = {"kind": "redis", "url": None, "window": None, "file": None}
    if file_path:
        measured = sources.from_file(file_path)
        source.update(kind="file", file=file_path)
        shown = file_path
    elif prometheus_url:
        try:
            sources.window_seconds(window)
        except ValueError as exc:
            raise sources.BadArgument(f"--window: {exc}") from None
        measured = sources.from_prometheus(prometheus_url, window)
        shown = f"Prometheus {mask_url(prometheus_url)} over {window}"
        source.update(kind="prometheus", url=mask_url(prometheus_url), window=window)
    else:
        measured, url = _measure_redis(ctx)
        shown = f"the broker's Redis {mask_url(url)}"
        source.update(url=mask_url(url))
    waits = _target_waits(target_waits, list(measured))
    try:
        recommendations = plan(measured, target_waits=waits, max_per_replica=max_per_replica)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None
    if as_json:
        data = report(measured, recommendations, source, max_per_replica)
        click.echo(json.dumps(data, allow_nan=False))
    else:
        _print(recommendations, shown)
