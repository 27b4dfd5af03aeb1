"""``celery -A personal_assistant.workers.celery_app pa-status [--json] [--check]``: the system
at a glance, and a liveness check for cron and monitoring.

Queue depths (every priority list counted), workers up / down / stopped from their heartbeats,
beat's last tick, task rates and p95 from the workers' metric snapshots, and the latest dead
letters; all read from the broker's Redis, so it works when no worker answers (that is when it
is needed most).

``--check`` prints one line per problem, or one summary line when there is none, and exits
0 when all is well, 1 when there is a problem, 69 (EX_UNAVAILABLE, as Celery) when the broker's
Redis does not answer, 64 when the broker is not Redis. The problems (:func:`find_problems`): a
worker down (silent for WORKER_DOWN_AFTER; a clean stop is not a problem, and a worker that
never comes back stays down until its heartbeat is pruned a day later), no worker up at all,
a queue holding messages that no worker up consumes, beat silent for ``BEAT_DOWN_AFTER_S`` or
never seen. The table view ends with the same lines.

``--json`` prints one object::

    {"generated_at": <unix s>,
     "queues": {<queue>: <messages waiting, int>},
     "workers": [{"hostname", "state" ("up" | "down" | "stopped"), "up", "stopped",
                  "last_seen", "age_seconds", "queues": [str], "pid": int | null,
                  "started_at": <unix s> | null, "extra": {...}}],
     "beat": {"state" ("up" | "down" | "never"), "last_tick": <unix s> | null,
              "age_seconds": float | null, "down_after": float, "lock_holder": str | null},
     "tasks": {<task>: {"rate": <runs/s> | null, "count": int, "failed": int,
                        "p95": <s> | null, "hosts": [str]}},
     "stale_snapshots": [<hostname>],
     "dead_letters_total": int,
     "failures": [{"id", "failed_at", "task", "exception_type", "exception", "queue",
                   "retries", "hostname"}],          (the newest FAILURES_SHOWN)
     "problems": [<one line each>]}

Named ``pa-status``, not ``status``: Celery registers plugin commands (the ``celery.commands``
entry point) first and its built-in ``status`` (workers answering ``ping``) afterwards, with
``Group.add_command`` replacing by name, so a plugin called ``status`` is silently shadowed.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click
import redis
from rich.console import Console
from rich.table import Table
from rich.text import Text

from personal_assistant.workers import constants as c
from personal_assistant.workers.cli.ops_command import OpsCommand, redis_errors
from personal_assistant.workers.cli.terminal import EX_FAILURE, UsageError, console
from personal_assistant.workers.config import is_redis_url, mask_url
from personal_assistant.workers.dead_letters.queue import DeadLetterQueue
from personal_assistant.workers.metrics.snapshots import read_snapshots, task_rates
from personal_assistant.workers.monitoring.liveness import BeatLiveness, WorkerRegistry
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.redis_clients import client_for
from personal_assistant.workers.schedulers.beat_report import lock_holder

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

COMMAND_NAME = "pa-status"
FAILURES_SHOWN = 10
# A snapshot older than this is from a worker that stopped writing: its last rate is history,
# not the present, so it is left out of the rates (its totals still count).
DEFAULT_STALE_AFTER_S = 120.0
# Beat records a tick at least every BEAT_MAX_LOOP_INTERVAL_S (30 s); four missed ticks is
# down. The same limit as beat's health check (health_check beat --max-age 120) and the
# CeleryBeatNotTicking alert, so the three agree on when beat is down.
BEAT_DOWN_AFTER_S: Final = 120.0
STATE_STYLE = {"up": "green", "down": "bold red", "stopped": "yellow", "never": "bold red"}
# The table shows the project's tasks without this prefix (the JSON keeps full names): every
# task has it, and it would take half of an 80-column terminal.
TASK_PREFIX = c.TASKS_PACKAGE + "."
# A failure's error is cut to this many characters in the table (`dlq show ID` has it whole).
ERROR_SHOWN = 120


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
        raise UsageError(
            f"pa-status reads queue depths and heartbeats from Redis; the broker is {mask_url(url)}"
        )
    client = client_for(url)
    with redis_errors(url):  # one line and exit 69 before any work starts
        client.ping()
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


def beat_status(
    client: redis.Redis, now: float, down_after: float = BEAT_DOWN_AFTER_S
) -> dict[str, Any]:
    """Beat's liveness: its last tick (any beat's, standby ones too) and the lock's holder."""
    last = BeatLiveness(client).last_tick()
    age = None if last is None else max(0.0, now - last)
    state = "never" if age is None else "up" if age <= down_after else "down"
    return {
        "state": state,
        "last_tick": last,
        "age_seconds": age,
        "down_after": down_after,
        "lock_holder": lock_holder(client),
    }


def find_problems(data: dict[str, Any]) -> list[str]:
    """What ``--check`` reports, one line each: workers down or none up, queues nobody
    consumes, beat silent. Empty when all is well."""
    problems = [
        f"worker {w['hostname']} is down: last heartbeat {_ago(w['age_seconds'])}"
        for w in data["workers"]
        if w["state"] == "down"
    ]
    up = [w for w in data["workers"] if w["state"] == "up"]
    if not up:
        problems.append("no worker is up (no heartbeat within WORKER_DOWN_AFTER)")
    else:
        consumed = {queue for w in up for queue in w["queues"]}
        problems += [
            f"queue {queue}: {depth} message(s) waiting and no worker up consumes it"
            for queue, depth in data["queues"].items()
            if depth and queue not in consumed
        ]
    beat = data["beat"]
    if beat["state"] == "never":
        problems.append("beat has never ticked against this Redis (is a beat running?)")
    elif beat["state"] == "down":
        problems.append(
            f"beat is down: last tick {_ago(beat['age_seconds'])} (limit {beat['down_after']:g}s)"
        )
    return problems


def summary(data: dict[str, Any]) -> str:
    """The one line ``--check`` prints when all is well."""
    up = sum(1 for w in data["workers"] if w["state"] == "up")
    waiting = sum(data["queues"].values())
    beat = data["beat"]
    ticked = "-" if beat["age_seconds"] is None else _ago(beat["age_seconds"])
    return (
        f"ok: {up} worker(s) up, beat ticked {ticked}, {waiting} message(s) waiting, "
        f"{data['dead_letters_total']} dead letter(s)"
    )


def collect_status(
    client: redis.Redis,
    *,
    now: float | None = None,
    down_after: float = c.WORKER_DOWN_AFTER_S,
    stale_after: float = DEFAULT_STALE_AFTER_S,
    beat_down_after: float = BEAT_DOWN_AFTER_S,
) -> dict[str, Any]:
    """Everything ``pa-status`` shows, as JSON-ready data (the shape is in the module's doc)."""
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
    data: dict[str, Any] = {
        "generated_at": ts,
        "queues": depths,
        "workers": [w.to_dict() for w in workers],
        "beat": beat_status(client, ts, beat_down_after),
        "tasks": tasks,
        "stale_snapshots": stale,
        "dead_letters_total": len(dlq),
        "failures": failures,
    }
    data["problems"] = find_problems(data)
    return data


def _state(state: str) -> Text:
    return Text(state.upper(), style=STATE_STYLE[state])


def _workers_table(data: dict[str, Any]) -> Table:
    table = Table(title="Workers (heartbeats)")
    table.add_column("hostname", overflow="fold", ratio=3)
    table.add_column("state", no_wrap=True)
    table.add_column("last seen", no_wrap=True)
    # As wide as the longest queue name, so each name stays whole on its line.
    table.add_column("queues", overflow="fold", ratio=3, min_width=max(map(len, c.QUEUES)))
    table.add_column("pid", no_wrap=True)
    table.add_column("up since (UTC)", overflow="fold", ratio=2)
    for w in data["workers"]:
        table.add_row(
            Text(w["hostname"]),
            _state(w["state"]),
            _ago(w["age_seconds"]),
            # A space after each comma: the names wrap between queues, not inside one.
            Text(", ".join(w["queues"]) or "-"),
            str(w["pid"] or "-"),
            _when(w["started_at"]),
        )
    if not data["workers"]:
        table.add_row("(no heartbeat seen)", "-", "-", "-", "-", "-")
    return table


def _tasks_table(data: dict[str, Any]) -> Table:
    table = Table(title="Tasks (from worker snapshots)")
    table.add_column("task", overflow="fold")
    for column in ("rate/s", "done", "failed", "p95 (worst host)", "hosts"):
        table.add_column(column, justify="right", overflow="fold")
    for name, row in data["tasks"].items():
        table.add_row(
            Text(name.removeprefix(TASK_PREFIX)),
            "-" if row["rate"] is None else f"{row['rate']:.2f}",
            str(row["count"]),
            str(row["failed"]),
            "-" if row["p95"] is None else f"{row['p95']:.3f}s",
            str(len(row["hosts"])),
        )
    if data["stale_snapshots"]:
        table.caption = "stale snapshots left out of rates: " + ", ".join(data["stale_snapshots"])
    return table


def _failures_table(data: dict[str, Any]) -> Table:
    # Two columns of two lines each: the id whole (it is what `dlq show` takes) above the
    # time, and the task above its error; five columns would cut every cell at 80 columns.
    table = Table(title=f"Recent failures (dead letters: {data['dead_letters_total']} in all)")
    table.add_column("id / failed at (UTC)", no_wrap=True)
    table.add_column("task (queue) / error", overflow="fold")
    for f in data["failures"]:
        error = f"{f['exception_type']}: {f['exception']}"
        if len(error) > ERROR_SHOWN:
            error = error[: ERROR_SHOWN - 1] + "…"
        task = f["task"].removeprefix(TASK_PREFIX) + (f" ({f['queue']})" if f["queue"] else "")
        # Text, not str: rich reads a str as markup, and dead letters are not ours to trust.
        table.add_row(
            Text(f["id"]) + Text("\n" + _when(f["failed_at"]), style="dim"),
            Text(task) + Text("\n" + error, style="red"),
        )
    return table


def _print_tables(data: dict[str, Any], broker: str, out: Console) -> None:
    out.print(Text(f"broker {mask_url(broker)} at {_when(data['generated_at'])} UTC"))

    queues = Table(title="Queues (waiting, all priorities)")
    queues.add_column("queue", overflow="fold")
    queues.add_column("depth", justify="right")
    for queue, depth in data["queues"].items():
        queues.add_row(queue, str(depth))
    out.print(queues)
    out.print(_workers_table(data))

    beat = data["beat"]
    ticked = "never" if beat["age_seconds"] is None else f"ticked {_ago(beat['age_seconds'])}"
    holder = beat["lock_holder"] or "nobody"
    out.print(Text("beat ") + _state(beat["state"]) + Text(f", {ticked}, lock held by {holder}"))

    out.print(_tasks_table(data))
    out.print(_failures_table(data))
    for problem in data["problems"]:
        out.print(Text(f"problem: {problem}", style="bold red"))
    if not data["problems"]:
        out.print(Text(summary(data), style="green"))


@click.command(name=COMMAND_NAME, cls=OpsCommand)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (shape above).")
@click.option(
    "--check",
    is_flag=True,
    help="Print one line per problem (or one summary line) and exit 1 when there is one.",
)
@click.option(
    "--down-after",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds without a heartbeat before a worker shows as down [default: WORKER_DOWN_AFTER,"
    " as the workers' celery_worker_up uses].",
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, check: bool, down_after: float | None) -> None:
    """Queues, workers, beat, task rates and recent failures, read from the broker's Redis.

    \b
    --check, for cron and monitoring: one line per problem (a worker down,
    no worker up, a queue with messages that no worker up consumes, beat
    silent for 120 s or never seen), else one "ok: ..." line. Exit codes:
    0 all well, 1 a problem, 69 Redis unreachable, 64 the broker is not Redis.

    \b
    --json prints one object (with --check too; the exit code as above):
      {"generated_at", "queues": {QUEUE: depth},
       "workers": [{"hostname", "state", "last_seen", "age_seconds",
                    "queues", "pid", "started_at", ...}],
       "beat": {"state", "last_tick", "age_seconds", "down_after",
                "lock_holder"},
       "tasks": {TASK: {"rate", "count", "failed", "p95", "hosts"}},
       "stale_snapshots", "dead_letters_total",
       "failures": [{"id", "failed_at", "task", "exception", ...}],
       "problems": [LINE]}
    """
    client, url = _client(ctx)
    if down_after is None:
        app: WorkerApp = ctx.obj.app
        down_after = float(app.settings.worker_down_after)
    data = collect_status(client, down_after=down_after)
    if as_json:
        click.echo(json.dumps(data, default=repr))
    elif check:
        for line in data["problems"] or [summary(data)]:
            click.echo(line)
    else:
        _print_tables(data, url, console())
    if check and data["problems"]:
        ctx.exit(EX_FAILURE)
