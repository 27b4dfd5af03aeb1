"""Resident memory of processes: a worker's main process, read from /proc, and a producer that
publishes many no-op tasks in a process of its own (so a test's own memory never counts).

Run as ``python -m tests.support.producer_rss BROKER_URL TASKS FIRST EVERY ours|plain``:
publishes TASKS no-op tasks (``send_task`` with this package's app, or plain Celery's
``apply_async``) and prints one JSON line ``{"sent": n, "rss_kib": ...}`` after the first
FIRST tasks, after every EVERY and at the end. Nobody consumes the queue: the process empties
its Redis database at each line, so the messages never pile up in Redis (another process's
memory anyway).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import redis

from tests.support import plain_noop_app
from tests.support.worker import REPO, worker_env

OURS_QUEUE = "file_tasks"
PLAIN_QUEUE = "plain_producer"
# The producer's run may take minutes at 100,000 tasks on a busy machine.
PRODUCER_TIMEOUT_S = 1800


def vm_rss_kib(pid: int | str = "self") -> int:
    """The process's resident set size (VmRSS of /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def run_producer(
    broker_url: str, tasks: int, first: int, every: int, side: str
) -> list[tuple[int, int]]:
    """Run the producer (``side``: ours or plain) in a subprocess; its (tasks sent, RSS in
    KiB) samples."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, broker_url, str(tasks), str(first), str(every), side],
        env=worker_env(broker_url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PRODUCER_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"the {side} producer failed:\n{done.stderr[-3000:]}")
    samples = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [(int(s["sent"]), int(s["rss_kib"])) for s in samples]


def _publisher(broker_url: str, side: str) -> Callable[[], object]:
    if side == "plain":
        plain_app = plain_noop_app.make_app(broker_url, PLAIN_QUEUE)
        noop = plain_app.tasks[plain_noop_app.NOOP]
        return lambda: noop.apply_async(queue=PLAIN_QUEUE)
    # Imported here: the plain producer never loads this package's code (nor its memory).
    from personal_assistant.workers.celery_app import create_app  # noqa: PLC0415
    from personal_assistant.workers.config import load_settings  # noqa: PLC0415

    app = create_app(load_settings(celery_broker_url=broker_url))
    # The result is dropped at once, as a producer that fires and forgets does.
    return lambda: app.send_task("tests.noop", queue=OURS_QUEUE)


def main(argv: list[str]) -> None:
    """Publish, printing the RSS at the sample points (see the module's docstring)."""
    broker_url, side = argv[0], argv[4]
    tasks, first, every = (int(arg) for arg in argv[1:4])
    publish = _publisher(broker_url, side)
    client = redis.Redis.from_url(broker_url)
    for sent in range(1, tasks + 1):
        publish()
        if sent in (first, tasks) or sent % every == 0:
            client.flushdb()
            print(json.dumps({"sent": sent, "rss_kib": vm_rss_kib(os.getpid())}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
