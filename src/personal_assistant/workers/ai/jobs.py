"""AI jobs in the store: create and change them, claim the due ones, record each run.

Every function takes an open session (``store.engine.session_scope``) and works inside its
transaction, so the caller decides what commits together.

A claim sets a lease on a due job: a fresh token and an expiry, in the claim's transaction.
On PostgreSQL the claim's SELECT takes ``FOR UPDATE SKIP LOCKED``, so two claimers at the
same moment take different jobs; on SQLite every transaction begins IMMEDIATE (store/engine.py),
so the select-then-update is atomic by itself. A run records its result only while the job
still carries its token (:func:`finish_run`, :func:`fail_run`): a run whose lease expired and
whose job was claimed again since, or a redelivered message of a finished run, records nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, inspect, or_, select, update
from sqlalchemy.orm import Session

from personal_assistant.workers.ai.chat_client import Completion
from personal_assistant.workers.ai.schedule import Schedule, ScheduleError, parse_schedule
from personal_assistant.workers.store.ai_models import AIJob, AIRun
from personal_assistant.workers.store.engine import engine_for

MAX_NAME_CHARS = 128
"""A job's name (the store's column): a short identifier the backend chooses."""

MAX_PROMPT_CHARS = 200_000
"""The longest prompt (and system prompt): about 50k tokens, more than most models' context
once the answer's room is kept; a longer text is a document, which belongs in storage."""

MAX_MODEL_CHARS = 128
"""A model's name (the store's column); real ones are under 64 characters."""

RUNS_KEPT = 50
"""Runs kept per job in ``ai_runs`` (the newest): weeks of a daily job's history, while a job
every few minutes cannot grow the table without bound."""

MAX_ERROR_CHARS = 2000
"""How much of an error a job and its run keep: the reason, never a whole response."""

STATUS_OK = "ok"
STATUS_ERROR = "error"


class JobError(ValueError):
    """A job that cannot be stored as given; the message names the field."""


@dataclass(frozen=True)
class JobSpec:
    """What a job is, as the backend gives it (validated by :meth:`checked`)."""

    name: str
    prompt: str
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"
    system_prompt: str | None = None
    # None: AI_MODEL.
    model: str | None = None
    enabled: bool = True

    def checked(self) -> Schedule:
        """Raise JobError (or ScheduleError, also a ValueError) for a bad field; return the
        job's parsed schedule."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise JobError("name must be non-empty text")
        if len(self.name) > MAX_NAME_CHARS or not self.name.isprintable():
            raise JobError(f"name must be at most {MAX_NAME_CHARS} printable characters")
        for field, text in (("prompt", self.prompt), ("system_prompt", self.system_prompt)):
            if text is None and field == "system_prompt":
                continue
            if not isinstance(text, str) or not text.strip():
                raise JobError(f"{field} must be non-empty text")
            if len(text) > MAX_PROMPT_CHARS:
                raise JobError(
                    f"{field} has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}"
                )
        if self.model is not None and (
            not isinstance(self.model, str)
            or not self.model
            or len(self.model) > MAX_MODEL_CHARS
            or any(ch.isspace() for ch in self.model)
        ):
            raise JobError(f"model must be a name of at most {MAX_MODEL_CHARS} characters")
        if not isinstance(self.enabled, bool):
            raise JobError("enabled must be true or false")
        return parse_schedule(self.cron, self.interval_seconds, self.timezone)


@dataclass(frozen=True)
class Claim:
    """A claimed job: its id and the lease token its run must show."""

    job_id: int
    token: str


@dataclass(frozen=True)
class ClaimedJob:
    """What a run needs of its job, read while the lease was held."""

    id: int
    name: str
    prompt: str
    system_prompt: str | None
    model: str | None


def schedule_of(job: AIJob) -> Schedule:
    """The stored job's schedule (ScheduleError if the row was edited into a bad one)."""
    return parse_schedule(job.cron, job.interval_seconds, job.timezone)


def has_ai_tables(url: str) -> bool:
    """True when the store at ``url`` has been migrated (``celery ... db upgrade``)."""
    return inspect(engine_for(url)).has_table(AIJob.__tablename__)


def upsert_job(session: Session, spec: JobSpec, now: datetime) -> int:
    """Create the job named ``spec.name``, or change it; return its id.

    A new job first runs at its schedule's first time after ``now``. A changed schedule, or
    a job enabled again, also moves the next run to the first time after ``now`` (times
    missed while it was disabled are skipped); otherwise the next run stays where it was.
    """
    schedule = spec.checked()
    job = session.scalars(select(AIJob).where(AIJob.name == spec.name)).one_or_none()
    if job is None:
        job = AIJob(name=spec.name, run_count=0, prompt_tokens_total=0, completion_tokens_total=0)
        session.add(job)
        reschedule = True
    else:
        reschedule = (job.cron, job.interval_seconds, job.timezone) != (
            spec.cron,
            spec.interval_seconds,
            spec.timezone,
        ) or (spec.enabled and not job.enabled)
    job.prompt = spec.prompt
    job.system_prompt = spec.system_prompt
    job.model = spec.model
    job.cron = spec.cron
    job.interval_seconds = spec.interval_seconds
    job.timezone = spec.timezone
    job.enabled = spec.enabled
    if reschedule:
        job.next_run_at = schedule.next_after(now)
    session.flush()
    return job.id


def get_job(session: Session, name: str) -> AIJob | None:
    """The job named ``name``, or None."""
    return session.scalars(select(AIJob).where(AIJob.name == name)).one_or_none()


def set_enabled(session: Session, name: str, enabled: bool, now: datetime) -> bool:
    """Enable or disable the job named ``name`` (False: no such job). Enabling schedules the
    next run after ``now``; disabling lets a run in progress finish."""
    job = get_job(session, name)
    if job is None:
        return False
    if enabled and not job.enabled:
        job.next_run_at = schedule_of(job).next_after(now)
    job.enabled = enabled
    return True


def delete_job(session: Session, name: str) -> bool:
    """Delete the job named ``name`` and its runs (False: no such job). A run in progress
    then finds no job and records nothing."""
    job_id = session.scalars(select(AIJob.id).where(AIJob.name == name)).one_or_none()
    if job_id is None:
        return False
    # Explicitly, not only by the foreign key's cascade: SQLite enforces it per connection.
    session.execute(delete(AIRun).where(AIRun.job_id == job_id))
    session.execute(delete(AIJob).where(AIJob.id == job_id))
    return True


def _claimable(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Enabled, due at ``now``, and not claimed (or its claim expired)."""
    return (
        AIJob.enabled.is_(True),
        AIJob.next_run_at <= now,
        or_(AIJob.lease_token.is_(None), AIJob.lease_expires_at <= now),
    )


def count_due(session: Session, now: datetime) -> int:
    """How many jobs are due and not claimed (or their claim expired) at ``now``."""
    return int(session.scalar(select(func.count(AIJob.id)).where(*_claimable(now))) or 0)


def claim_due(session: Session, limit: int, lease_seconds: float, now: datetime) -> list[Claim]:
    """Claim up to ``limit`` due jobs, oldest due first, for ``lease_seconds``.

    A job is due when it is enabled, its next run is at or before ``now`` and it has no live
    lease. Each claimed job gets its own token; concurrent claimers never share a job.
    """
    query = (
        select(AIJob.id)
        .where(*_claimable(now))
        .order_by(AIJob.next_run_at, AIJob.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # rendered on PostgreSQL; SQLite locks up front
    )
    expires = now + timedelta(seconds=lease_seconds)
    claims: list[Claim] = []
    for job_id in session.scalars(query).all():
        token = uuid.uuid4().hex
        session.execute(
            update(AIJob)
            .where(AIJob.id == job_id)
            .values(lease_token=token, lease_expires_at=expires)
        )
        claims.append(Claim(job_id, token))
    return claims


def _owned(session: Session, job_id: int, token: str) -> AIJob | None:
    """The job if ``token`` is still its lease token, locked for the rest of the transaction."""
    query = select(AIJob).where(AIJob.id == job_id, AIJob.lease_token == token).with_for_update()
    return session.scalars(query).one_or_none()


def load_claimed(session: Session, job_id: int, token: str) -> ClaimedJob | None:
    """What the run of a claim needs, or None when the claim is no longer the job's."""
    job = session.scalars(
        select(AIJob).where(AIJob.id == job_id, AIJob.lease_token == token)
    ).one_or_none()
    if job is None:
        return None
    return ClaimedJob(job.id, job.name, job.prompt, job.system_prompt, job.model)


def renew_lease(session: Session, job_id: int, token: str, expires_at: datetime) -> bool:
    """Keep the claim until ``expires_at`` (a run that waits before it retries); False when
    the claim is no longer the job's."""
    result = session.execute(
        update(AIJob)
        .where(AIJob.id == job_id, AIJob.lease_token == token)
        .values(lease_expires_at=expires_at)
    )
    return bool(getattr(result, "rowcount", 0))


def _end_run(job: AIJob, now: datetime) -> None:
    """Release the lease and set the next run from the schedule (disabling a job whose stored
    schedule is no longer valid, with the reason, rather than failing every run)."""
    job.lease_token = None
    job.lease_expires_at = None
    job.last_run_at = now
    job.run_count += 1
    try:
        job.next_run_at = schedule_of(job).next_run(job.next_run_at, now)
    except ScheduleError as exc:
        job.enabled = False
        job.last_error = f"disabled: {exc}"[:MAX_ERROR_CHARS]


def _keep_newest_runs(session: Session, job_id: int) -> None:
    oldest_kept = session.scalar(
        select(AIRun.id)
        .where(AIRun.job_id == job_id)
        .order_by(AIRun.id.desc())
        .offset(RUNS_KEPT - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        session.execute(delete(AIRun).where(AIRun.job_id == job_id, AIRun.id < oldest_kept))


def finish_run(
    session: Session,
    job_id: int,
    token: str,
    completion: Completion,
    now: datetime,
    *,
    started_at: datetime | None = None,
) -> bool:
    """Record a run's answer and usage and schedule the next run; False (nothing recorded)
    when ``token`` is no longer the job's lease token."""
    job = _owned(session, job_id, token)
    if job is None:
        return False
    job.last_status = STATUS_OK
    job.last_answer = completion.answer
    job.last_error = None
    job.prompt_tokens_total += completion.prompt_tokens
    job.completion_tokens_total += completion.completion_tokens
    _end_run(job, now)
    session.add(
        AIRun(
            job_id=job_id,
            started_at=started_at or now,
            finished_at=now,
            model=completion.model[:MAX_MODEL_CHARS],
            status=STATUS_OK,
            answer=completion.answer,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        )
    )
    session.flush()
    _keep_newest_runs(session, job_id)
    return True


def fail_run(
    session: Session,
    job_id: int,
    token: str,
    error: str,
    now: datetime,
    *,
    model: str,
    started_at: datetime | None = None,
) -> bool:
    """Record a run that failed for good (``error`` says why) and schedule the next run, so
    the schedule goes on; False (nothing recorded) when the token is no longer the job's."""
    job = _owned(session, job_id, token)
    if job is None:
        return False
    job.last_status = STATUS_ERROR
    job.last_error = error[:MAX_ERROR_CHARS]
    _end_run(job, now)
    session.add(
        AIRun(
            job_id=job_id,
            started_at=started_at or now,
            finished_at=now,
            model=model[:MAX_MODEL_CHARS],
            status=STATUS_ERROR,
            error=error[:MAX_ERROR_CHARS],
        )
    )
    session.flush()
    _keep_newest_runs(session, job_id)
    return True


def describe_job(job: AIJob) -> dict[str, Any]:
    """A job as JSON-ready data for the backend and the CLI (no prompt: it may be long)."""

    def moment(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    try:
        schedule = schedule_of(job).describe()
    except ScheduleError as exc:
        schedule = f"invalid: {exc}"
    return {
        "id": job.id,
        "name": job.name,
        "enabled": job.enabled,
        "schedule": schedule,
        "model": job.model,
        "next_run_at": moment(job.next_run_at),
        "last_run_at": moment(job.last_run_at),
        "last_status": job.last_status,
        "last_answer": job.last_answer,
        "last_error": job.last_error,
        "run_count": job.run_count,
        "prompt_tokens_total": job.prompt_tokens_total,
        "completion_tokens_total": job.completion_tokens_total,
    }
