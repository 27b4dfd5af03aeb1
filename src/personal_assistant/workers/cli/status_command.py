"""``celery -A personal_assistant.workers.celery_app pa-status [--json]``: the system at a glance.

Queue depths (every priority list counted), workers up / down / stopped from their heartbeats,
task rates and p95 from the workers' metric snapshots, and the latest dead letters; all read
from the broker's Redis, so it works when no worker answers (that is when it is needed most).

Named ``pa-status``, not ``status``: Celery registers plugin commands (the ``celery.commands``
entry point) first and its built-in ``status`` (workers answering ``ping``) afterwards, with
``Group.add_command`` replacing by name, so a plugin called ``status`` is silently shadowed.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import redis
from rich.console import Console
from rich.table import Table

from personal_assistant.workers import constants as c
from personal_assistant.workers.config import is_redis_url, mask_url
from personal_assistant.workers.dead_letters.queue import DeadLetterQueue
from personal_assistant.workers.metrics.snapshots import read_snapshots, task_rates
from personal_assistant.workers.monitoring.liveness import WorkerRegistry
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.redis_clients import client_for

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

COMMAND_NAME = "pa-status"
FAILURES_SHOWN = 10
# A snapshot older than this is from a worker that stopped writing: its last rate is history,
# not the present, so it is left out of the rates (its totals still count).
DEFAULT_STALE_AFTER_S = 120.0
STATE_STYLE = {"up": "green", "down": "bold red", "stopped": "yellow"}


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _client(ctx: click.Context) -> tuple[redis.Redis, str]:
    app: WorkerApp = ctx.obj.app
    url = str(app.conf.broker_url)
    if not is_redis_url(url):
        raise click.ClickException(
            f"status reads queue depths and heartbeats from Redis; the broker is {mask_url(url)}"
        )
    client = client_for(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot reach the broker {mask_url(url)}: {mask_url(str(exc))}"
        ) from None
    return client, url


def aggregate_tasks(
    client: redis.Redis, now: float, stale_after: float = DEFAULT_STALE_AFTER_S
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per task: rate (runs/s, summed over fresh hosts), totals, worst host's p95; stale hosts."""
    tasks: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    for host, (current, prev) in sorted(read_snapshots(client, now).items()):
        fresh = now - current["ts"] <= stale_after
        if not fresh:
            stale.append(host)
        rates = task_rates(current, prev)
        for name, stats in current["tasks"].items():
            row = tasks.setdefault(
                name, {"rate": None, "count": 0, "failed": 0, "p95": None, "hosts": []}
            )
            row["count"] += int(stats.get("count", 0))
            row["failed"] += int(stats.get("failed", 0) or 0)
            row["hosts"].append(host)
            p95 = stats.get("p95")
            if isinstance(p95, int | float):
                # Percentiles of different hosts cannot be merged; the worst one is an upper
                # bound of the fleet's, which is what an operator chasing latency needs.
                row["p95"] = float(p95) if row["p95"] is None else max(row["p95"], float(p95))
            rate = rates.get(name)
            if fresh and rate is not None:
                row["rate"] = (row["rate"] or 0.0) + rate
    return dict(sorted(tasks.items())), stale


def collect_status(
    client: redis.Redis,
    *,
    now: float | None = None,
    down_after: float = c.WORKER_DOWN_AFTER_S,
    stale_after: float = DEFAULT_STALE_AFTER_S,
) -> dict[str, Any]:
    """Everything ``pa-status`` shows, as JSON-ready data."""
    ts = time.time() if now is None else now
    depths = queue_depths(client, c.QUEUES)
    workers = WorkerRegistry(client, down_after=down_after).workers(ts, include_stopped=True)
    tasks, stale = aggregate_tasks(client, ts, stale_after)
    dlq = DeadLetterQueue(client)
    failures = [
        {
            "id": letter.id,
            "failed_at": letter.failed_at,
            "task": letter.task_name,
            "exception_type": letter.exception_type,
            "exception": letter.exception,
            "queue": letter.queue,
            "retries": letter.retries,
            "hostname": letter.hostname,
        }
        for letter in dlq.list(FAILURES_SHOWN)
    ]
    return {
        "generated_at": ts,
        "queues": depths,
        "workers": [w.to_dict() for w in workers],
        "tasks": tasks,
        "stale_snapshots": stale,
        "dead_letters_total": len(dlq),
        "failures": failures,
    }


def _print_tables(data: dict[str, Any], broker: str) -> None:
    console = Console(width=200)
    console.print(f"[bold]broker[/bold] {mask_url(broker)}  at {_when(data['generated_at'])} UTC")

    queues = Table(title="Queues (messages waiting, all priorities)", min_width=44)
    queues.add_column("queue")
    queues.add_column("depth", justify="right")
    for queue, depth in data["queues"].items():
        queues.add_row(queue, str(depth))
    console.print(queues)

    workers = Table(title="Workers (heartbeats)")
    for column in ("hostname", "state", "last seen", "queues", "pid", "up since (UTC)"):
        workers.add_column(column, overflow="fold")
    for w in data["workers"]:
        style = STATE_STYLE[w["state"]]
        workers.add_row(
            w["hostname"],
            f"[{style}]{w['state'].upper()}[/{style}]",
            _ago(w["age_seconds"]),
            ",".join(w["queues"]) or "-",
            str(w["pid"] or "-"),
            _when(w["started_at"]),
        )
    if not data["workers"]:
        workers.add_row("(no heartbeat seen)", "-", "-", "-", "-", "-")
    console.print(workers)

    tasks = Table(title="Tasks (from worker snapshots)")
    for column in ("task", "rate/s", "done", "failed", "p95 (worst host)", "hosts"):
        tasks.add_column(column, justify="left" if column in ("task", "hosts") else "right")
    for name, row in data["tasks"].items():
        tasks.add_row(
            name,
            "-" if row["rate"] is None else f"{row['rate']:.2f}",
            str(row["count"]),
            str(row["failed"]),
            "-" if row["p95"] is None else f"{row['p95']:.3f}s",
            str(len(row["hosts"])),
        )
    if data["stale_snapshots"]:
        tasks.caption = "stale snapshots left out of rates: " + ", ".join(data["stale_snapshots"])
    console.print(tasks)

    failures = Table(title=f"Recent failures (dead letters: {data['dead_letters_total']} in all)")
    for column in ("failed at (UTC)", "task", "error", "queue", "id"):
        failures.add_column(column, overflow="fold")
    for f in data["failures"]:
        failures.add_row(
            _when(f["failed_at"]),
            f["task"],
            f"{f['exception_type']}: {f['exception']}"[:80],
            f["queue"] or "-",
            f["id"],
        )
    console.print(failures)


@click.command(name=COMMAND_NAME)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--down-after",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds without a heartbeat before a worker shows as down [default: WORKER_DOWN_AFTER,"
    " as the workers' celery_worker_up uses].",
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, down_after: float | None) -> None:
    """Queues, workers, task rates and recent failures, read from the broker's Redis."""
    client, url = _client(ctx)
    if down_after is None:
        app: WorkerApp = ctx.obj.app
        down_after = float(app.settings.worker_down_after)
    data = collect_status(client, down_after=down_after)
    if as_json:
        click.echo(json.dumps(data, default=repr))
    else:
        _print_tables(data, url)
