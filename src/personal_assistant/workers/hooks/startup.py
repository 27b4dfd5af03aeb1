"""A worker's start: a node name a running worker holds is refused, and the banner shows the
broker URL as configured.

Two workers with one node name (``celery@host``, or the ``-n`` given) are one worker to every
tool: ``inspect`` and ``control`` get two answers under one name, and the liveness registry
(monitoring/liveness.py) takes the second's heartbeat as a restart of the first (``pa-status``
then shows the first "up since" the second's start). So a worker checks, at init (before any
heartbeat, pool or consumer), whether its name is taken, and stops with one line naming the
other worker and since when, exit 73: Celery's code when its pidfile says another instance runs
(``make run`` does not restart it: it would be refused again).

Taken means a fresh heartbeat under the name (the registry, one Redis read) *and* an answer to
Celery's ping addressed to that name. The heartbeat alone is not enough: a worker killed a few
seconds ago (the OOM killer, ``make run`` restarting it) leaves a heartbeat that is fresh for
WORKER_DOWN_AFTER more seconds, and the restart must not be refused. The ping alone would cost a
second at every start (a ping waits its whole timeout when nobody answers); it is sent only
when a heartbeat is fresh. A worker with METRICS_ENABLED=false sends no heartbeat, so a clash
with one is not seen; a broker other than Redis has no registry, so nothing is checked there.
When the registry cannot be read (Redis down) the worker starts: its own broker checks report
that.

This hook must run before MetricsHook, whose heartbeat would otherwise claim the name first.

The banner: Celery prints the broker as kombu's ``as_uri()``, which puts ``:**@`` in a URL that
has no password (and names the transport class); the banner shows the URL as configured, its
password (if any) masked.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Final, NoReturn

import redis

from personal_assistant.workers import redis_clients
from personal_assistant.workers.config import is_redis_url, mask_url
from personal_assistant.workers.hooks.registry import WorkerHook
from personal_assistant.workers.metrics.cluster_series import exporter_hostname
from personal_assistant.workers.monitoring.liveness import WorkerLiveness, WorkerRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    from personal_assistant.workers.worker_app import WorkerApp

logger = logging.getLogger(__name__)

# Celery's exit code when its pidfile says another instance runs (celery.platforms
# EX_CANTCREAT): "already running", not a failure a restart would fix.
EX_CANTCREAT: Final = 73
# sysexits EX_CONFIG: a setting is wrong (a port in use: METRICS_PORT); restarting cannot help.
EX_CONFIG: Final = 78
# Celery's own default for ping: a live worker's pidbox answers in milliseconds on one Redis.
PING_TIMEOUT_S: Final = 1.0


def refuse_start(message: str, code: int) -> NoReturn:
    """Stop a starting worker with one line on stderr (passwords masked) and ``code``.

    SystemExit passes through the hook registry and Celery's signal dispatch (both catch
    Exception only), so the worker exits before its banner, pool or consumer.
    """
    sys.stderr.write(f"personal_assistant.workers: {mask_url(message)}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def fresh_heartbeat(registry: WorkerRegistry, node: str) -> WorkerLiveness | None:
    """The worker up under ``node``'s name in the registry (heartbeat fresh, not stopped)."""
    hostname = exporter_hostname(node)
    for worker in registry.workers():
        if worker.hostname == hostname and worker.up:
            return worker
    return None


def answers_ping(app: WorkerApp, node: str, timeout: float = PING_TIMEOUT_S) -> bool | None:
    """True when a worker named ``node`` answers Celery's ping; None when the ping could not be
    sent (then nobody can tell)."""
    try:
        # A connection of its own, closed here: nothing of this check outlives it.
        with app.connection_for_write() as connection:
            replies = app.control.ping(destination=[node], timeout=timeout, connection=connection)
    except Exception:  # kombu raises its own and the transport's errors
        logger.debug("ping of %s failed", node, exc_info=True)
        return None
    return any(node in reply for reply in replies or ())


def holder_line(node: str, holder: WorkerLiveness) -> str:
    """The refusal: which worker holds the name, since when, and what to do."""
    since = (
        time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(holder.started_at))
        if holder.started_at
        else "an unknown time"
    )
    pid = f"pid {holder.pid}, " if holder.pid is not None else ""
    return (
        f"worker {node} not started: a worker named {node} is already up ({pid}up since "
        f"{since}, heartbeat {holder.age_seconds:.0f}s ago, answers ping); stop that one, or "
        "give this one another name (-n NAME@%h)"
    )


def broker_line(startup_info: Callable[..., Any], shown_as: str, kombu_view: str) -> Any:
    """``startup_info`` (Celery's banner) with kombu's view of the broker URL replaced."""

    def with_broker_url(*args: Any, **kwargs: Any) -> Any:
        return str(startup_info(*args, **kwargs)).replace(kombu_view, shown_as)

    return with_broker_url


class StartupHook(WorkerHook):
    """Refuses a node name another running worker holds; fixes the banner's broker URL."""

    name = "startup"

    def __init__(self, app: WorkerApp) -> None:
        self.app = app
        self._note: str | None = None  # logged once Celery's logging is set up

    def on_worker_init(self, *, sender: Any) -> None:
        """Main process, before MetricsHook's heartbeat and before the pool: check the name."""
        node = str(getattr(sender, "hostname", "") or "")
        url = str(self.app.conf.broker_url)
        if not node or not is_redis_url(url):
            return
        client = redis_clients.probe_client(url)
        try:
            registry = WorkerRegistry(client, down_after=self.app.settings.worker_down_after)
            holder = fresh_heartbeat(registry, node)
        except redis.RedisError:
            return  # Redis down: the worker's own broker checks say so
        finally:
            client.close()
        if holder is None:
            return
        answered = answers_ping(self.app, node)
        if answered:
            refuse_start(holder_line(node, holder), EX_CANTCREAT)
        self._note = (
            f"{node}: the previous worker of this name (pid {holder.pid}) sent a heartbeat "
            f"{holder.age_seconds:.0f}s ago but "
            + ("does not answer ping: taken as gone" if answered is False else "cannot be pinged")
        )

    def on_worker_setup(self, *, instance: Any) -> None:
        """Before Celery prints its banner (celeryd_after_setup): show the URL as configured."""
        if self._note is not None:
            logger.info("%s", self._note)
            self._note = None
        url = str(self.app.conf.broker_url)
        try:
            kombu_view = str(instance.app.connection().as_uri())
        except Exception:  # an unparsable URL: the banner keeps Celery's text
            return
        # An instance attribute: this worker's banner only, nothing process-wide.
        instance.startup_info = broker_line(instance.startup_info, mask_url(url), kombu_view)
