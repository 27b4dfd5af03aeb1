"""Scheduled AI jobs and their runs.

A job is a prompt with a schedule (a cron expression in a time zone, or an interval) and the
time it is next due. ``process_due_ai_tasks`` claims due jobs by setting a lease (a token and
an expiry) in one statement and dispatches ``run_ai_task`` with the token; the run stores its
answer, token usage and the job's next run time only while it still holds the lease. A job
whose worker died is claimable again once its lease expires. Each run is kept in ``ai_runs``
(the newest AI_RUNS_KEPT per job).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from personal_assistant.workers.store.base import Base, utcnow


class AIJob(Base):
    """A scheduled prompt."""

    __tablename__ = "ai_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    prompt: Mapped[str] = mapped_column(Text)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    # None: AI_MODEL.
    model: Mapped[str | None] = mapped_column(String(128))
    # Exactly one of cron and interval_seconds.
    cron: Mapped[str | None] = mapped_column(String(128))
    interval_seconds: Mapped[int | None]
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(default=True)
    next_run_at: Mapped[datetime]
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(32))
    last_answer: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    run_count: Mapped[int] = mapped_column(default=0)
    prompt_tokens_total: Mapped[int] = mapped_column(default=0)
    completion_tokens_total: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_ai_jobs_enabled_next_run_at", "enabled", "next_run_at"),)


class AIRun(Base):
    """One call of a job's prompt: the answer and what it cost."""

    __tablename__ = "ai_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("ai_jobs.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    answer: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
