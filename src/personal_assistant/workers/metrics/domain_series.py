"""The domain counters: what the e-mail, calendar and AI tasks did, beside the task metrics.

Pure: names, help texts and label names only. Tasks count through ``app.domain_metrics``
(domain_counters.py), a workflow's end in the same transaction that ends it; beat's
``/metrics`` exports the cluster-wide totals (metrics/cluster_series.py). The names
follow Prometheus's conventions: a ``pa_`` prefix for this package's own series (the
``celery_*`` names are the popular exporter's), ``_total`` added on exposition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class DomainFamily:
    """One counter family: its name (without ``_total``), help and label names."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


EMAIL_SENT = DomainFamily("pa_email_sent", "E-mails the SMTP server accepted")
EMAIL_FAILED = DomainFamily(
    "pa_email_failed", "E-mails failed for good (5xx reply, or out of attempts)"
)
EMAIL_DEFERRED = DomainFamily(
    "pa_email_deferred", "E-mail attempts deferred for a retry (4xx reply or connection error)"
)
CALENDAR_UPSERTED = DomainFamily(
    "pa_calendar_events_upserted", "Calendar events inserted or changed by a sync", ("feed",)
)
CALENDAR_REMOVED = DomainFamily(
    "pa_calendar_events_removed", "Calendar events removed because the feed dropped them", ("feed",)
)
CALENDAR_SYNC_ERRORS = DomainFamily(
    "pa_calendar_sync_errors",
    "Calendar syncs that kept the previous events (http, too_large, malformed, connection, "
    "timeout)",
    ("feed", "reason"),
)
AI_REQUESTS = DomainFamily(
    "pa_ai_requests",
    "Chat-completion requests by outcome (ok, rate_limited, server_error, timeout, error)",
    ("model", "outcome"),
)
AI_TOKENS = DomainFamily(
    "pa_ai_tokens", "Tokens used, by kind (prompt, completion)", ("model", "kind")
)
AI_RATE_LIMITED = DomainFamily(
    "pa_ai_rate_limited", "429 replies of the chat-completions API", ("model",)
)
WORKFLOWS_ENDED = DomainFamily(
    "pa_workflows_ended",
    "Workflows ended, by state (completed, failed, cancelled, timed_out)",
    ("state",),
)


def domain_field(family: DomainFamily, *labels: str) -> str:
    """The Redis hash field counting ``family`` with these label values."""
    if len(labels) != len(family.labels):
        raise ValueError(f"{family.name} takes labels {family.labels}, got {labels}")
    return json.dumps([family.name, *labels])


DOMAIN_FAMILIES: dict[str, DomainFamily] = {
    family.name: family
    for family in (
        EMAIL_SENT,
        EMAIL_FAILED,
        EMAIL_DEFERRED,
        CALENDAR_UPSERTED,
        CALENDAR_REMOVED,
        CALENDAR_SYNC_ERRORS,
        AI_REQUESTS,
        AI_TOKENS,
        AI_RATE_LIMITED,
        WORKFLOWS_ENDED,
    )
}
