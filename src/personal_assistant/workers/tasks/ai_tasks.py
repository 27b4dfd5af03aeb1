"""Tasks of the ai domain (queue ``ai_tasks``): AI jobs over an OpenAI-compatible API.

Routed by module name (see routing.py); only workers consuming ``ai_tasks`` run them.

- ``process_due_ai_tasks`` (beat, every ten minutes): claims the due jobs (ai/jobs.py) and
  publishes one ``run_ai_task`` per claim. Idempotent: a claim is atomic, so a second delivery
  claims nothing the first one took.
- ``run_ai_task(job_id, lease_token)``: waits for the cluster-wide rate limit
  (ai/rate_limit.py), asks the model (ai/chat_client.py) and stores the answer, the token usage
  and the next run time, only while the job still carries ``lease_token``. A 429 is retried
  after the server's Retry-After; a 5xx, a timeout or a refused connection with backoff
  (RETRY_BACKOFF_BASE ...), up to TASK_MAX_RETRIES failed calls; a 4xx, a malformed reply or
  the last failed call ends the run: the job records the error and its schedule goes on.

Without AI_BASE_URL and AI_MODEL the tasks succeed while there is nothing to do (saying what is
not configured) and fail with a message naming the variables as soon as a job is due.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

import httpx

from personal_assistant.workers.ai import jobs, rate_limit
from personal_assistant.workers.ai.chat_client import (
    ChatError,
    ClientError,
    Completion,
    MalformedResponse,
    RateLimited,
    build_messages,
    complete,
)
from personal_assistant.workers.backoff import backoff_delay
from personal_assistant.workers.celery_app import app
from personal_assistant.workers.config import WorkerSettings, mask_url, state_redis_url
from personal_assistant.workers.errors import PermanentError
from personal_assistant.workers.metrics.domain_series import (
    AI_RATE_LIMITED,
    AI_REQUESTS,
    AI_TOKENS,
)
from personal_assistant.workers.redis_clients import client_for
from personal_assistant.workers.store.ai_models import AIJob
from personal_assistant.workers.store.base import utcnow
from personal_assistant.workers.store.engine import session_scope
from personal_assistant.workers.tasks.base_tasks import BaseTask

logger = logging.getLogger(__name__)

SHORT_WAIT_S = 2.0
"""A rate-limit wait up to this long is slept in the task: cheaper than a round trip through
the broker. A longer one frees the worker and retries the task after the wait."""

MAX_CLAIM_ROUNDS = 10
"""Batches (AI_BATCH_SIZE each) one ``process_due_ai_tasks`` claims at most; the rest wait for
the next beat tick, so one run stays short however many jobs fell due."""

MAX_TOKEN_CHARS = 64
"""A lease token's length (the store's column): longer ones cannot be a token of ours."""


def _not_configured(settings: WorkerSettings) -> list[str]:
    return settings.missing_settings().get("ai", [])


def _dispatch(task: BaseTask, claims: list[jobs.Claim]) -> None:
    # Through the calling task's app (its broker), which is the deployment's app in a worker.
    runner = task.app.tasks[run_ai_task.name]
    for claim in claims:
        runner.apply_async(args=[claim.job_id, claim.token])


@app.task(base=BaseTask, bind=True)
def process_due_ai_tasks(self: BaseTask) -> dict[str, Any]:
    """Claim the due AI jobs and publish a ``run_ai_task`` for each; report the counts."""
    settings = self.settings
    url = settings.store_url
    missing = _not_configured(settings)
    if not jobs.has_ai_tables(url):
        if missing:  # no store, so no job is due: nothing to do, and nothing to run it with
            return {"claimed": 0, "not_configured": missing}
        raise PermanentError(
            f"the store at {mask_url(url)} has no AI tables: run "
            "`celery -A personal_assistant.workers.celery_app db upgrade`"
        )
    if missing:
        with session_scope(url) as session:
            due = jobs.count_due(session, utcnow())
        if due:
            raise PermanentError(
                f"{due} AI job(s) due but {' and '.join(missing)} not set: "
                "set them to the chat-completions API (e.g. AI_BASE_URL=https://api.openai.com/v1)"
            )
        logger.info("no AI job due; AI is not configured (%s not set)", ", ".join(missing))
        return {"claimed": 0, "not_configured": missing}
    claimed = 0
    for _ in range(MAX_CLAIM_ROUNDS):
        with session_scope(url) as session:
            claims = jobs.claim_due(
                session, settings.ai_batch_size, settings.ai_lease_seconds, utcnow()
            )
        # Published after the commit: a run that starts at once must find its lease stored.
        _dispatch(self, claims)
        claimed += len(claims)
        if len(claims) < settings.ai_batch_size:
            break
    if claimed:
        logger.info("claimed %d due AI job(s)", claimed)
    return {"claimed": claimed}


def _check_arguments(job_id: object, lease_token: object, failed_attempts: object) -> None:
    """Refuse arguments no claim produces (a hand-written or edited message), naming them."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise PermanentError(f"run_ai_task: job_id must be an integer, got {type(job_id).__name__}")
    if not isinstance(lease_token, str) or not 0 < len(lease_token) <= MAX_TOKEN_CHARS:
        raise PermanentError("run_ai_task: lease_token must be the token of a claim")
    if (
        isinstance(failed_attempts, bool)
        or not isinstance(failed_attempts, int)
        or failed_attempts < 0
    ):
        raise PermanentError("run_ai_task: failed_attempts must be an integer >= 0")


def _rate_limit_wait(settings: WorkerSettings, model: str) -> float:
    """Take a request from the cluster-wide limit: 0 once taken (after sleeping a short
    wait here), else the wait that is too long to sleep in the task."""
    per_minute = settings.ai_requests_per_minute
    if per_minute <= 0:
        return 0.0
    client = client_for(state_redis_url(settings.celery_broker_url, settings.result_backend_url))
    slept = 0.0
    while True:
        wait = rate_limit.acquire(client, model, per_minute)
        if wait <= 0:
            return 0.0
        if slept + wait > SHORT_WAIT_S:
            return wait
        time.sleep(wait)
        slept += wait


class _Run:
    """One execution of run_ai_task: its job, model and the steps that end or defer it."""

    def __init__(self, task: BaseTask, job: jobs.ClaimedJob, token: str, model: str) -> None:
        self.task = task
        self.settings = task.settings
        self.job = job
        self.token = token
        self.model = model
        self.started = utcnow()

    def count(self, outcome: str) -> None:
        self.task.app.domain_metrics.count(AI_REQUESTS, self.model, outcome)

    def stale(self) -> dict[str, Any]:
        logger.info("AI job %d: its claim was taken over; this run records nothing", self.job.id)
        return {"job_id": self.job.id, "status": "stale"}

    def defer(self, countdown: float, failed_attempts: int, reason: str) -> dict[str, Any]:
        """Retry the task after ``countdown`` seconds, keeping the claim that long (raises
        Retry); the stale result if the claim is no longer this run's."""
        countdown = min(countdown, float(self.settings.max_countdown))
        keep_until = utcnow() + timedelta(seconds=countdown + self.settings.ai_lease_seconds)
        with session_scope(self.settings.store_url) as session:
            held = jobs.renew_lease(session, self.job.id, self.token, keep_until)
        if not held:
            return self.stale()
        logger.warning("AI job %r: %s; retry in %.1f s", self.job.name, reason, countdown)
        # The task has no max_retries: failed calls are counted in failed_attempts (bounded
        # by TASK_MAX_RETRIES), rate-limit waits not at all (each one renews the claim).
        raise self.task.retry(kwargs={"failed_attempts": failed_attempts}, countdown=countdown)

    def give_up(self, error: str) -> dict[str, Any]:
        """Record the failed run (the schedule goes on) and fail the task with ``error``; the
        stale result if the claim is no longer this run's (its holder records the outcome)."""
        with session_scope(self.settings.store_url) as session:
            recorded = jobs.fail_run(
                session,
                self.job.id,
                self.token,
                error,
                utcnow(),
                model=self.model,
                started_at=self.started,
            )
        if not recorded:
            return self.stale()
        raise PermanentError(f"AI job {self.job.name!r}: {error}")

    def failed_call(self, exc: ChatError, failed_attempts: int) -> dict[str, Any]:
        """A call that got no answer: retry (transient) or end the run (permanent, or the
        retry budget is spent); see defer and give_up for what it returns or raises."""
        self.count(exc.outcome)
        if isinstance(exc, RateLimited):
            self.task.app.domain_metrics.count(AI_RATE_LIMITED, self.model)
        if isinstance(exc, (ClientError, MalformedResponse)):
            return self.give_up(str(exc))
        if failed_attempts >= self.settings.task_max_retries:
            return self.give_up(f"gave up after {failed_attempts + 1} failed calls: {exc}")
        if isinstance(exc, RateLimited):
            delay = exc.retry_after
        else:
            delay = backoff_delay(
                failed_attempts,
                base=self.settings.retry_backoff_base,
                maximum=self.settings.retry_backoff_max,
            )
        return self.defer(delay, failed_attempts + 1, str(exc))

    def finish(self, completion: Completion) -> dict[str, Any]:
        """Count and store the answer; the job's next run is set from its schedule."""
        self.count("ok")
        metrics = self.task.app.domain_metrics
        metrics.count(AI_TOKENS, self.model, "prompt", amount=completion.prompt_tokens)
        metrics.count(AI_TOKENS, self.model, "completion", amount=completion.completion_tokens)
        now = utcnow()
        with session_scope(self.settings.store_url) as session:
            recorded = jobs.finish_run(
                session, self.job.id, self.token, completion, now, started_at=self.started
            )
            job = session.get(AIJob, self.job.id) if recorded else None
            next_run: datetime | None = job.next_run_at if job is not None else None
        if not recorded:
            return self.stale()
        logger.info(
            "AI job %r answered by %s (%d+%d tokens); next run %s",
            self.job.name,
            completion.model,
            completion.prompt_tokens,
            completion.completion_tokens,
            next_run.isoformat() if next_run else "none",
        )
        return {
            "job_id": self.job.id,
            "status": jobs.STATUS_OK,
            "model": completion.model,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "next_run_at": next_run.isoformat() if next_run else None,
        }


@app.task(base=BaseTask, bind=True, idempotent=False, max_retries=None)
def run_ai_task(
    self: BaseTask, job_id: int, lease_token: str, failed_attempts: int = 0
) -> dict[str, Any]:
    """Run one claimed AI job: ask the model, store the answer (see the module doc).

    ``failed_attempts`` is the task's own count of failed calls so far (set by its retries).
    Not idempotent (a redelivered run may ask the model again), but its effect on the store
    is guarded: only the holder of the claim's token records anything, once.
    """
    _check_arguments(job_id, lease_token, failed_attempts)
    settings = self.settings
    with session_scope(settings.store_url) as session:
        job = jobs.load_claimed(session, job_id, lease_token)
    if job is None:
        logger.info("AI job %d: claim no longer held (a finished or taken-over run)", job_id)
        return {"job_id": job_id, "status": "stale"}
    model = job.model or settings.ai_model
    missing = [name for name in _not_configured(settings) if name != "AI_MODEL" or not model]
    if missing:
        raise PermanentError(f"AI job {job.name!r} cannot run: {' and '.join(missing)} not set")
    run = _Run(self, job, lease_token, model)
    wait = _rate_limit_wait(settings, model)
    if wait > 0:
        # Jitter: runs told the same wait would otherwise all come back at the same moment.
        jittered = wait * random.uniform(1.0, 2.0)  # noqa: S311 - jitter, not security
        return run.defer(jittered, failed_attempts, "cluster rate limit reached")
    try:
        with httpx.Client() as client:
            completion = complete(
                client, settings, model, build_messages(job.prompt, job.system_prompt)
            )
    except ChatError as exc:
        return run.failed_call(exc, failed_attempts)
    return run.finish(completion)


@app.task(base=BaseTask, bind=True)
def probe(self: BaseTask) -> dict[str, Any]:
    """Answer where it ran: proves end to end that this queue has a live worker."""
    return self.describe_execution()
