"""Beat scheduler for ``celery beat --scheduler=...enhanced_scheduler:EnhancedScheduler``.

Any number of beats may run; one sends. Each loop of each beat is one round trip to the
broker's Redis (beat_state.read_tick) that holds the lock (beat_lock.py), records beat's
liveness for its health check, reads the entries' change counter and, for the holder, the
entries due now. For each due entry the holder decides (beat_timing.plan, then the overlap and
backlog checks) and records every decision of the tick in one atomic claim
(run_claims.claim_runs) before it publishes the runs: each (entry, time) is sent at most once
by the lock's current holder, and a run claimed but not published (the beat died in between)
is published by the next holder. State lives in Redis, so a restarted beat, or one on a new
container, neither repeats nor forgets a run. A standby beat ticks at least every third of the
lock timeout, so it takes over within ``BEAT_LOCK_TIMEOUT`` plus one tick of the holder's death.

Clocks: the lock expires on Redis's clock; an entry's times are absolute instants, computed the
same by every beat, and each is claimed once. A beat whose clock runs ahead sends early, never
twice.

Why not celery-redbeat: its lock could be extended by a beat that no longer held it (#127), was
lost for good when the loop slept past its timeout (#306, #230), did not stop a send after a
failed acquire (#214); it saved ``last_run_at`` after the send (#111, #130), so a restart sent
again; and its schedule lived only in Redis (#224). beat_lock.py and run_claims.py say how each
is avoided here. It also has no patterns (windows, overlap, backlog, workflows, misfire policy).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis
from celery.beat import Scheduler

from personal_assistant.workers import redis_clients, routing
from personal_assistant.workers.config import is_redis_url, mask_url
from personal_assistant.workers.monitoring.health_server import HealthServer
from personal_assistant.workers.monitoring.queue_depth import queue_depths
from personal_assistant.workers.schedulers.beat_catalogue import Catalogue, load_catalogue
from personal_assistant.workers.schedulers.beat_entry import BeatEntry
from personal_assistant.workers.schedulers.beat_exports import start_beat_exports
from personal_assistant.workers.schedulers.beat_lock import RENEW_FRACTION
from personal_assistant.workers.schedulers.beat_state import (
    DUE_BATCH,
    BeatState,
    DueEntry,
    PlannedEntry,
    TickView,
)
from personal_assistant.workers.schedulers.beat_timing import first_time, next_time, plan, send_at
from personal_assistant.workers.schedulers.entry_store import EntryStore
from personal_assistant.workers.schedulers.run_claims import (
    Decision,
    ack_pending,
    claim_runs_and_soonest,
    pending_runs,
)
from personal_assistant.workers.schedulers.run_overlap import still_running
from personal_assistant.workers.schedulers.run_send import run_id, send_run

logger = logging.getLogger(__name__)

# After a Redis error beat tries again this soon: long enough not to spin on a dead server,
# short enough that the lock (renewed every third of its timeout) is not lost to one blip.
ERROR_RETRY_S = 1.0


def beat_owner() -> str:
    """This beat's name in the lock: host, pid and a random suffix (a restarted beat with the
    same pid on a new container is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class EnhancedScheduler(Scheduler):  # type: ignore[misc]
    """Celery beat scheduler with its state, lock and run-time entries in Redis."""

    #: Seconds, for tests; beat uses the wall clock.
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        url = str(app.conf.broker_url)
        if not is_redis_url(url):
            raise ValueError(
                f"EnhancedScheduler keeps its state in Redis; the broker {mask_url(url)} is not"
            )
        settings = app.settings
        self.lock_timeout = float(kwargs.pop("lock_timeout", settings.beat_lock_timeout))
        self.owner = str(kwargs.pop("owner", None) or beat_owner())
        self.client: redis.Redis = redis_clients.client_for(url)
        self.state = BeatState(self.client, owner=self.owner, timeout=self.lock_timeout)
        self.store = EntryStore(self.client)
        self.catalogue = Catalogue()
        self.token: int | None = None
        self._version: str | None = None  # the entries' change counter the catalogue is of
        self._planned = False
        self._unpublished = False
        self.redis_failing = False
        self.last_tick_monotonic = time.monotonic()
        kwargs.pop("schedule_filename", None)  # Celery passes it; the state is in Redis
        # Served from the first tick: Celery also builds a scheduler only to print its banner
        # (lazy=True), which must not take the port.
        self.exports: HealthServer | None = None
        self._exports_started = False
        super().__init__(app, *args, **kwargs)

    # --- Celery's Scheduler interface -------------------------------------------------------

    def setup_schedule(self) -> None:
        """Load and check every entry (an invalid one is logged and left out)."""
        try:
            self._version = self.store.version()
        except redis.RedisError:
            self._version = None  # the first tick holding the lock loads again
        self._load(self.store)

    @property
    def schedule(self) -> dict[str, Any]:
        """The runnable entries, by name (Celery reads this for its banner and ``sync``)."""
        return dict(self.catalogue.enabled())

    @property
    def info(self) -> str:
        """Beat's start banner line."""
        return (
            f"    . redis state -> {mask_url(str(self.app.conf.broker_url))}\n"
            f"    . lock timeout -> {self.lock_timeout:g} s, owner {self.owner}"
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One loop: hold the lock, send what is due; the seconds to sleep before the next."""
        now = self.clock()
        self.last_tick_monotonic = time.monotonic()
        if not self._exports_started:
            self._exports_started = True
            self.exports = start_beat_exports(self)
        renew_every = self.lock_timeout * RENEW_FRACTION
        try:
            view = self.state.read_tick(token=self.token, now=now)
            if self.redis_failing:
                logger.info("beat reaches Redis again")
                self.redis_failing = False
            if view.token == 0:
                if self.token is not None:
                    logger.warning("beat lost the lock to %s; standing by", view.holder or "nobody")
                    self.token = None
                return min(renew_every, float(self.max_interval))
            wait = self._hold(view, now)
        except redis.RedisError as exc:
            self._redis_error(exc)
            return min(ERROR_RETRY_S, renew_every)
        return max(0.0, min(wait, renew_every, float(self.max_interval)))

    def _hold(self, view: TickView, now: float) -> float:
        """The holder's part of a tick; how long until it has something to do."""
        # A new holding, also when the token happens to repeat (a Redis restarted empty counts
        # tokens from 1 again, and lost the due set): re-plan everything.
        if view.acquired or view.token != self.token:
            logger.info("beat holds the lock (token %d); it sends the schedule", view.token)
            self.token = view.token
            self._planned = False
            self._unpublished = True
        if view.version != self._version:
            self._load(self.store)
            self._version = view.version
            self._planned = False
        if not self._planned:
            self._plan_entries(now)
            self._planned = True
            return 0.0
        if self._unpublished:
            self._publish_pending()
        soonest = view.soonest
        if view.due:
            recorded, soonest = self._run_due(view.due, now)
            if len(view.due) >= DUE_BATCH:
                return 0.0  # more are due than one tick takes
            if not recorded:
                # Every claim refused (the lock changed hands mid-tick): the next tick sorts
                # it out.
                return ERROR_RETRY_S
        return float(self.max_interval) if soonest is None else soonest - now

    def close(self) -> None:
        """Hand the lock over at once on a clean stop (a killed beat's expires by itself)."""
        if self.token is not None:
            try:
                self.state.release(self.token)
            except redis.RedisError:
                logger.warning("could not release the beat lock; it expires by itself")
            self.token = None
        if self.exports is not None:
            self.exports.stop()
            self.exports = None
        super().close()

    def sync(self) -> None:
        """Nothing to write: every decision is in Redis the moment it is made."""

    # --- The work of a tick -----------------------------------------------------------------

    def _load(self, store: EntryStore | None) -> None:
        try:
            self.catalogue = load_catalogue(self.app, store, self.clock())
        except redis.RedisError as exc:
            logger.warning("beat could not read the added entries (%s); declared ones only", exc)
            self.catalogue = load_catalogue(self.app, None, self.clock())
        for problem in self.catalogue.problems.values():
            logger.error("%s; the other entries run", problem)

    def _plan_entries(self, now: float) -> None:
        planned = []
        for entry in self.catalogue.enabled().values():
            first = first_time(entry, now)
            planned.append(
                PlannedEntry(entry.name, entry.fingerprint(), first, send_at(entry, first))
            )
        if (
            self.token is not None
            and self.state.sync_entries(token=self.token, entries=planned) < 0
        ):
            self.token = None

    def _run_due(self, due: list[DueEntry], now: float) -> tuple[int, float | None]:
        """Decide, claim and publish the due entries; the number of decisions recorded and
        the due set's soonest score after them."""
        entries = self.catalogue.enabled()
        decisions: list[Decision] = []
        for row in due:
            entry = entries.get(row.name)
            if entry is None:
                continue  # disabled or removed since: the next sync takes it out
            nominal = row.next_due if row.next_due is not None else now
            if row.last_due is not None and nominal <= row.last_due:
                nominal = next_time(entry, row.last_due)
            step = plan(entry, nominal, now)
            decisions.append(
                Decision(
                    entry=entry.name,
                    due=step.due,
                    next_due=step.next_due,
                    next_score=send_at(entry, step.next_due),
                    outcome=step.skip or "run",
                    task_id=run_id(entry, step.due),
                    missed=step.missed,
                )
            )
        decisions = self._apply_broker_checks(decisions, entries, due)
        assert self.token is not None
        claimed, soonest = claim_runs_and_soonest(self.client, decisions, token=self.token)
        runs = [d for d, ok in zip(decisions, claimed, strict=True) if ok and d.outcome == "run"]
        self._publish(runs, entries)
        return sum(claimed), soonest

    def _apply_broker_checks(
        self, decisions: list[Decision], entries: dict[str, BeatEntry], due: list[DueEntry]
    ) -> list[Decision]:
        """Turn runs into ``overlap`` and ``backlog`` skips where the broker says so."""
        last = {row.name: row for row in due}
        queues = {
            d.entry: entries[d.entry].queue or routing.queue_for_task(entries[d.entry].task)
            for d in decisions
            if d.outcome == "run" and entries[d.entry].max_queue_depth is not None
        }
        depths = queue_depths(self.client, sorted(set(queues.values()))) if queues else {}
        checked: list[Decision] = []
        for decision in decisions:
            entry = entries[decision.entry]
            reason = None
            depth_limit = entry.max_queue_depth
            if decision.outcome == "run" and depth_limit is not None:
                reason = "backlog" if depths[queues[entry.name]] > depth_limit else None
            if decision.outcome == "run" and reason is None and entry.no_overlap:
                row = last[entry.name]
                if still_running(self.app, entry, row.last_task_id, row.claimed_at):
                    reason = "overlap"
            checked.append(decision if reason is None else replace(decision, outcome=reason))
        return checked

    def _publish(self, runs: list[Decision], entries: dict[str, BeatEntry]) -> int:
        published: list[str] = []
        try:
            for run in runs:
                self._send(entries[run.entry], run.task_id, run.due)
                published.append(run.task_id)
        except Exception:
            logger.exception("beat could not publish a run; the next tick publishes it")
            self._unpublished = True
        finally:
            ack_pending(self.client, published)
        return len(published)

    def _send(self, entry: BeatEntry, task_id: str, due: float) -> None:
        send_run(self.app, entry, task_id, due, producer=self.producer)

    def _publish_pending(self) -> None:
        """Publish the runs a previous holder (or this beat) claimed and did not publish."""
        entries = self.catalogue.enabled()
        published: list[str] = []
        for task_id, (name, due) in pending_runs(self.client).items():
            entry = entries.get(name) or self.catalogue.entries.get(name)
            if entry is None:
                logger.warning("beat: dropping pending run %s of unknown entry %s", task_id, name)
                published.append(task_id)
                continue
            try:
                self._send(entry, task_id, due)
            except Exception:
                logger.exception("beat could not publish pending run %s of %s", task_id, name)
                ack_pending(self.client, published)
                return
            logger.warning(
                "beat: published run %s of %s left pending by a beat that died", task_id, name
            )
            published.append(task_id)
        ack_pending(self.client, published)
        self._unpublished = False

    def _redis_error(self, exc: Exception) -> None:
        if not self.redis_failing:
            logger.warning(
                "beat cannot reach Redis (%s: %s); nothing is sent until it can",
                type(exc).__name__,
                exc,
            )
        self.redis_failing = True
