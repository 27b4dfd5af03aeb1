"""AI jobs end to end: a real worker on ``ai_tasks``, a SQLite store shared with the test, and
a loopback server answering as the chat-completions API. Due jobs run and store their answers;
a 429 with Retry-After and a 500 are ridden out; without AI settings the beat task succeeds
while nothing is due and fails naming the variables once a job is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from sqlalchemy import update

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.metrics.domain_counters import read_domain_counts
from personal_assistant.workers.schedulers.ai_scheduler import ai_job_status, schedule_ai_job
from personal_assistant.workers.store.ai_models import AIJob
from personal_assistant.workers.store.base import utcnow
from personal_assistant.workers.store.engine import session_scope
from tests.support.chat_api import ChatAPI
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

PROCESS_DUE = f"{c.TASKS_PACKAGE}.ai_tasks.process_due_ai_tasks"
MODEL = "loopback-model"
KEY = "sk-loopback-key-never-logged"  # a test key, sent only to loopback


@pytest.fixture
def api() -> Iterator[ChatAPI]:
    server = ChatAPI(answer="Two meetings, one deadline.", prompt_tokens=30, completion_tokens=9)
    yield server
    server.close()


def make_due(sqlite_store: str, name: str) -> None:
    """Create the job ``name`` (daily at 07:00 Berlin) and make it due now."""
    schedule_ai_job(
        name,
        f"Brief me ({name}).",
        cron="0 7 * * *",
        timezone="Europe/Berlin",
        settings=load_settings(database_url=sqlite_store),
    )
    with session_scope(sqlite_store) as session:
        session.execute(
            update(AIJob)
            .where(AIJob.name == name)
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )


def status(sqlite_store: str, name: str) -> dict[str, Any]:
    found = ai_job_status(name, settings=load_settings(database_url=sqlite_store))
    assert found is not None
    return found


def run_due_jobs(producer_app: WorkerApp) -> Any:
    """Publish the beat's task (routed to ai_tasks) and return its result."""
    return producer_app.send_task(PROCESS_DUE).get(timeout=30)


def wait_finished(sqlite_store: str, name: str) -> dict[str, Any]:
    """The job ``name`` once a run of it has finished (ok or error)."""
    found: dict[str, Any] = wait_for(
        lambda: (job := status(sqlite_store, name))["last_status"] and job, timeout=20
    )
    return found


def test_due_jobs_run_on_a_worker_riding_out_a_429_and_a_500(
    producer_app: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
    sqlite_store: str,
    api: ChatAPI,
) -> None:
    worker = start_worker(
        [c.AI_QUEUE],
        env={
            "DATABASE_URL": sqlite_store,
            "AI_BASE_URL": api.base_url,
            "AI_MODEL": MODEL,
            "AI_API_KEY": KEY,
            "AI_REQUESTS_PER_MINUTE": "0",
            "RETRY_BACKOFF_BASE": "0.2",
        },
    )
    started = utcnow()

    # A due job runs: answer, tokens and the next run (tomorrow, 07:00 Berlin) are stored.
    make_due(sqlite_store, "plain")
    assert run_due_jobs(producer_app) == {"claimed": 1}
    plain = wait_finished(sqlite_store, "plain")
    assert plain["last_answer"] == "Two meetings, one deadline."
    assert (plain["run_count"], plain["prompt_tokens_total"], plain["completion_tokens_total"]) == (
        1,
        30,
        9,
    )
    next_run = datetime.fromisoformat(plain["next_run_at"])
    assert started < next_run <= started + timedelta(days=1)
    assert next_run.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "07:00"
    assert api.chat_requests()[0].headers["Authorization"] == f"Bearer {KEY}"

    # A 429 asking for one second: the run waits that long, then succeeds.
    api.rate_limit_next("1")
    make_due(sqlite_store, "limited")
    run_due_jobs(producer_app)
    limited = wait_finished(sqlite_store, "limited")
    assert limited["last_status"] == "ok"
    first, second = [r for r in api.chat_requests() if "limited" in r.prompt]
    assert second.at - first.at >= 0.9

    # A 500: retried with backoff, then succeeds.
    api.fail_next(500)
    make_due(sqlite_store, "flaky")
    run_due_jobs(producer_app)
    assert wait_finished(sqlite_store, "flaky")["last_status"] == "ok"
    assert len([r for r in api.chat_requests() if "flaky" in r.prompt]) == 2

    # Counted in the pool child, in Redis within a second.
    wait_for(lambda: read_domain_counts(redis_client).get(("pa_ai_requests", MODEL, "ok")) == 3, 5)
    counts = read_domain_counts(redis_client)
    assert counts[("pa_ai_rate_limited", MODEL)] == 1
    assert counts[("pa_ai_requests", MODEL, "server_error")] == 1
    assert counts[("pa_ai_tokens", MODEL, "prompt")] == 90
    # Neither the key nor the prompts reach the worker's log.
    log = worker.log()
    assert KEY not in log and "Brief me" not in log


def test_without_ai_settings_the_beat_task_succeeds_until_a_job_is_due_then_names_them(
    producer_app: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
    sqlite_store: str,
) -> None:
    start_worker(
        [c.AI_QUEUE], env={"DATABASE_URL": sqlite_store, "AI_BASE_URL": "", "AI_MODEL": ""}
    )

    assert run_due_jobs(producer_app) == {
        "claimed": 0,
        "not_configured": ["AI_BASE_URL", "AI_MODEL"],
    }

    make_due(sqlite_store, "waiting")
    result = producer_app.send_task(PROCESS_DUE)
    result.get(timeout=30, propagate=False)
    assert result.state == "FAILURE"
    assert "1 AI job(s) due but AI_BASE_URL and AI_MODEL not set" in str(result.result)
    assert status(sqlite_store, "waiting")["last_status"] is None  # not claimed, not run
