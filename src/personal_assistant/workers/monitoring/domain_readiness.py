"""What ``/readyz`` says about the domains a worker serves: the store, and missing settings.

A worker of the ai, email or sync queue needs the store, migrated: without it every task of
those queues fails, so the worker is not ready (503). A domain whose settings are missing (no
SMTP_HOST, no AI_BASE_URL, no CALENDAR_FEEDS) is reported but keeps the worker ready: its
tasks succeed while there is no work for them, and fail with a clear error when there is
(a compose deployment may run the email worker long before SMTP is configured).

Like the other probes, the answers name no host, database or credential.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from personal_assistant.workers.config import WorkerSettings, mask_url
from personal_assistant.workers.store.engine import driver_url, is_sqlite
from personal_assistant.workers.store.migrate import current_revision_on, head_revision

logger = logging.getLogger(__name__)

# The domain each queue's tasks belong to (the keys of DomainSettings.missing_settings).
QUEUE_DOMAINS = {"ai_tasks": "ai", "email_tasks": "email", "sync_tasks": "sync"}
# A probe's connection attempt gives up after this (seconds), like the Redis probes.
STORE_CONNECT_TIMEOUT_S = 2


def store_ready(url: str) -> tuple[bool, str]:
    """Whether the store answers and is at the newest migration.

    The probe's engine is its own, without a pool (``NullPool``): it runs in the worker's
    main process, which must hold no connection when the pool forks.
    """
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).exists():
            return False, "store: not migrated (run `celery ... db upgrade`)"
    connect_args = {} if is_sqlite(url) else {"connect_timeout": STORE_CONNECT_TIMEOUT_S}
    engine = create_engine(driver_url(url), poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            revision = current_revision_on(connection)
    except Exception as exc:
        logger.warning("readiness: store %s unreachable: %s", mask_url(url), mask_url(str(exc)))
        return False, f"store: not ok ({type(exc).__name__})"
    finally:
        engine.dispose()
    if revision != head_revision():
        return False, "store: not migrated (run `celery ... db upgrade`)"
    return True, "store: ok"


def domains_ready(settings: WorkerSettings, queues: Iterable[str]) -> tuple[bool, str]:
    """The store's readiness and the missing settings of the domains of ``queues``."""
    domains = [QUEUE_DOMAINS[q] for q in queues if q in QUEUE_DOMAINS]
    if not domains:
        return True, ""
    ok, message = store_ready(settings.store_url)
    parts = [message]
    missing = settings.missing_settings()
    for domain in sorted(set(domains)):
        if domain in missing:
            parts.append(f"{domain}: not configured ({', '.join(missing[domain])})")
    return ok, "; ".join(parts)
