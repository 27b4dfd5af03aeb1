"""Tasks of the sync domain (queue ``sync_tasks``): iCalendar synchronisation.

Routed by module name (see routing.py); only workers consuming ``sync_tasks`` run them.

``sync_calendar_events`` syncs every feed of CALENDAR_FEEDS (or the ones named), each in its
own transactions (calendar_sync/runner.py), so one bad feed never stops or undoes the others.
A feed that fails (an HTTP error, a timeout, a malformed or oversized body) keeps the events
of its last good sync; the error goes to the feed's row (``last_error``), the result, a log
line and ``pa_calendar_sync_errors{feed, reason}``.

When a run succeeds or fails:

- It succeeds when at least one feed synced (or was not modified): the failed feeds are in its
  result and get their next chance at the next hourly run.
- It fails with a TransientError, retried with backoff, when no feed synced and at least one
  failed for a reason that may pass (timeout, connection, HTTP 5xx/408/429): the network or
  the servers were down, and an earlier retry beats waiting an hour.
- It succeeds when every feed failed for lasting reasons (malformed, too large, HTTP 4xx):
  retrying cannot help until someone changes the feed, and the errors are reported as above.
- With no CALENDAR_FEEDS it succeeds and says so (a deployment may run the sync worker before
  any feed is configured); naming a feed that is not configured fails at once (PermanentError).
- A store that is not migrated fails at once; an unreachable store is a TransientError.

Idempotent: a run repeated with the same feeds stores the same events and writes none of them
(unchanged events are skipped by their content hash), so redelivery after a lost worker and
retries are safe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import OperationalError

from personal_assistant.workers.calendar_sync.apply import STATUS_ERROR
from personal_assistant.workers.calendar_sync.fetch import feed_client
from personal_assistant.workers.calendar_sync.runner import FeedOutcome, sync_feed
from personal_assistant.workers.celery_app import app
from personal_assistant.workers.config import mask_url
from personal_assistant.workers.errors import PermanentError, TransientError
from personal_assistant.workers.metrics.domain_counters import DomainCounters
from personal_assistant.workers.metrics.domain_series import (
    CALENDAR_REMOVED,
    CALENDAR_SYNC_ERRORS,
    CALENDAR_UPSERTED,
)
from personal_assistant.workers.store.migrate import is_current
from personal_assistant.workers.tasks.base_tasks import BaseTask

logger = logging.getLogger(__name__)

NOT_CONFIGURED = "no CALENDAR_FEEDS configured"
# How much of a requested feed name an error quotes (names come from messages).
NAME_QUOTE_CHARS = 70


@app.task(base=BaseTask, bind=True)
def probe(self: BaseTask) -> dict[str, Any]:
    """Answer where it ran: proves end to end that this queue has a live worker."""
    return self.describe_execution()


@app.task(base=BaseTask, bind=True)
def sync_calendar_events(self: BaseTask, feeds: list[str] | None = None) -> dict[str, Any]:
    """Sync every configured iCalendar feed (or the ones named) into the store.

    Returns ``{"feeds": {name: {"status", "upserted", "removed", "unchanged", "reason",
    "error"}}, "not_configured": [...]}``; see the module doc for when the run fails.
    """
    settings = self.settings
    selected = selected_feeds(settings.calendar_feeds, feeds)
    not_configured = settings.missing_settings().get("sync", [])
    if not selected:
        logger.info("sync_calendar_events: %s, nothing to sync", NOT_CONFIGURED)
        return {"feeds": {}, "not_configured": not_configured, "message": NOT_CONFIGURED}
    store_url = settings.store_url
    check_store(store_url)
    outcomes: list[FeedOutcome] = []
    with feed_client(settings.calendar_timeout) as client:
        for done, (name, url) in enumerate(selected.items(), start=1):
            try:
                outcome = sync_feed(
                    client,
                    store_url,
                    name,
                    url,
                    max_bytes=settings.calendar_max_bytes,
                    timeout=settings.calendar_timeout,
                )
            except OperationalError as exc:
                raise TransientError(
                    f"store {mask_url(store_url)} failed during feed {name}: {_db_error(exc)}"
                ) from None
            count_outcome(self.app.domain_metrics, outcome)
            log_outcome(outcome)
            outcomes.append(outcome)
            self.report_progress(done, len(selected), f"{name}: {outcome.status}")
    fail_if_only_transient_failures(outcomes)
    return {"feeds": {o.name: o.as_dict() for o in outcomes}, "not_configured": not_configured}


def selected_feeds(configured: Mapping[str, str], requested: object) -> dict[str, str]:
    """The feeds a run syncs: all of ``configured``, or the ``requested`` names among them."""
    if requested is None:
        return dict(configured)
    if not isinstance(requested, list) or not all(isinstance(n, str) for n in requested):
        raise PermanentError(
            f"feeds must be a list of feed names, got {type(requested).__name__}"
            + (" with a non-text item" if isinstance(requested, list) else "")
        )
    if not requested:
        raise PermanentError("feeds is empty: name at least one feed, or omit it to sync all")
    unknown = [name for name in requested if name not in configured]
    if unknown:
        shown = ", ".join(repr(name[:NAME_QUOTE_CHARS]) for name in unknown[:5])
        have = ", ".join(sorted(configured)) if configured else NOT_CONFIGURED
        raise PermanentError(f"unknown feed(s) {shown}: CALENDAR_FEEDS has {have}")
    return {name: configured[name] for name in dict.fromkeys(requested)}


def check_store(store_url: str) -> None:
    """Fail clearly before any feed is fetched when the store cannot take the events."""
    try:
        current = is_current(store_url)
    except OperationalError as exc:
        raise TransientError(f"store {mask_url(store_url)} unavailable: {_db_error(exc)}") from None
    if not current:
        raise PermanentError(
            f"store {mask_url(store_url)} is not migrated: run "
            "`celery -A personal_assistant.workers.celery_app db upgrade`"
        )


def count_outcome(counters: DomainCounters, outcome: FeedOutcome) -> None:
    """Add one feed's sync to the domain counters."""
    counters.count(CALENDAR_UPSERTED, outcome.name, amount=outcome.counts.upserted)
    counters.count(CALENDAR_REMOVED, outcome.name, amount=outcome.counts.removed)
    if outcome.error is not None:
        counters.count(CALENDAR_SYNC_ERRORS, outcome.name, outcome.error.reason)


def log_outcome(outcome: FeedOutcome) -> None:
    """One log line for one feed's sync."""
    if outcome.error is not None:
        logger.warning(
            "calendar feed %s: %s error, previous events kept: %s",
            outcome.name,
            outcome.error.reason,
            outcome.error,
        )
    elif outcome.status == "not_modified":
        logger.info("calendar feed %s: not modified", outcome.name)
    else:
        counts = outcome.counts
        logger.info(
            "calendar feed %s: synced, %d upserted, %d removed, %d unchanged%s",
            outcome.name,
            counts.upserted,
            counts.removed,
            counts.unchanged,
            f"; {outcome.floating} event(s) without a time zone taken as UTC"
            if outcome.floating
            else "",
        )


def fail_if_only_transient_failures(outcomes: list[FeedOutcome]) -> None:
    """Raise TransientError when no feed synced and a retry may help (see the module doc)."""
    if any(o.status != STATUS_ERROR for o in outcomes):
        return
    if not any(o.error is not None and o.error.transient for o in outcomes):
        return
    summary = "; ".join(f"{o.name}: {o.error}" for o in outcomes)
    raise TransientError(f"no calendar feed synced ({summary})")


def _db_error(exc: OperationalError) -> str:
    """A store error on one line, credentials masked (the statement is left out)."""
    detail = " ".join(str(exc.orig).split())[:200]
    return f"{type(exc.orig).__name__}: {mask_url(detail)}"
