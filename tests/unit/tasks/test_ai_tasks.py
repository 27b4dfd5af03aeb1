"""The AI tasks run in this process against a real Redis, a SQLite store and a loopback
chat-completions server: the beat task claims due jobs and publishes one run each, or says
what is not configured; a run stores its answer and counts, records nothing when its claim is
gone, ends on a 4xx with the schedule going on, and keeps its claim while it waits."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.exceptions import Retry
from sqlalchemy import update

from personal_assistant.workers import constants as c
from personal_assistant.workers.ai import jobs, rate_limit
from personal_assistant.workers.ai.jobs import JobSpec
from personal_assistant.workers.app import WorkerApp
from personal_assistant.workers.broker.priority import redis_list_names
from personal_assistant.workers.errors import PermanentError
from personal_assistant.workers.metrics.domain_counters import read_domain_counts
from personal_assistant.workers.store.ai_models import AIJob
from personal_assistant.workers.store.base import utcnow
from personal_assistant.workers.store.engine import dispose_all, session_scope
from personal_assistant.workers.tasks.ai_tasks import process_due_ai_tasks, run_ai_task
from tests.support.apps import MakeApp
from tests.support.chat_api import ChatAPI, Reply, error_body

MODEL = "test-model"
RUN = f"{c.TASKS_PACKAGE}.ai_tasks.run_ai_task"


@pytest.fixture
def api() -> Iterator[ChatAPI]:
    server = ChatAPI(answer="Three meetings today.", prompt_tokens=20, completion_tokens=6)
    yield server
    server.close()


@pytest.fixture
def configured(
    make_app: MakeApp,
    clean_env: pytest.MonkeyPatch,
    redis_url: str,
    sqlite_store: str,
    api: ChatAPI,
) -> WorkerApp:
    """An app with AI configured against the loopback API (no rate limit unless a test sets it)."""
    return app_for(make_app, redis_url, sqlite_store, ai_base_url=api.base_url, ai_model=MODEL)


@pytest.fixture
def limited_app(
    make_app: MakeApp,
    clean_env: pytest.MonkeyPatch,
    redis_url: str,
    sqlite_store: str,
    api: ChatAPI,
) -> Callable[[int], WorkerApp]:
    """Apps configured like ``configured`` but with this many requests per minute."""

    def make(per_minute: int) -> WorkerApp:
        return app_for(
            make_app,
            redis_url,
            sqlite_store,
            ai_base_url=api.base_url,
            ai_model=MODEL,
            ai_requests_per_minute=per_minute,
        )

    return make


def app_for(make_app: MakeApp, redis_url: str, sqlite_store: str, **settings: Any) -> WorkerApp:
    defaults = {"ai_requests_per_minute": 0, "ai_lease_seconds": 600}
    return make_app(
        celery_broker_url=redis_url,
        celery_result_backend=redis_url,
        database_url=sqlite_store,
        **(defaults | settings),
    )


def due_job(sqlite_store: str, name: str = "agenda", **fields: Any) -> int:
    """A job due a minute ago (hourly)."""
    spec = JobSpec(name=name, prompt="What is on today?", cron="0 * * * *", **fields)
    with session_scope(sqlite_store) as session:
        job_id = jobs.upsert_job(session, spec, utcnow())
        session.execute(
            update(AIJob)
            .where(AIJob.id == job_id)
            .values(next_run_at=utcnow() - timedelta(minutes=1))
        )
    return job_id


def claimed_job(sqlite_store: str, name: str = "agenda", **fields: Any) -> tuple[int, str]:
    due_job(sqlite_store, name, **fields)
    with session_scope(sqlite_store) as session:
        (found,) = jobs.claim_due(session, 10, 600, utcnow())
    return found.job_id, found.token


def job_row(sqlite_store: str, job_id: int) -> AIJob:
    with session_scope(sqlite_store) as session:
        job = session.get(AIJob, job_id)
        assert job is not None
        return job


def published_runs(client: redis.Redis) -> list[list[Any]]:
    """The args of every run_ai_task message waiting on the ai_tasks queue."""
    found = []
    for name in redis_list_names(c.AI_QUEUE):
        for raw in client.lrange(name, 0, -1):
            message = json.loads(raw)
            if message["headers"]["task"] == RUN:
                args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
                found.append(args)
    return found


def domain_counts(app: WorkerApp, client: redis.Redis) -> dict[tuple[str, ...], int]:
    app.domain_metrics.flush()
    return read_domain_counts(client)


def test_without_ai_settings_and_nothing_due_the_beat_task_succeeds_saying_what_is_missing(
    make_app: MakeApp,
    clean_env: pytest.MonkeyPatch,
    redis_url: str,
    sqlite_store: str,
    tmp_path: Path,
) -> None:
    not_yet = due_job(sqlite_store)
    with session_scope(sqlite_store) as session:
        session.execute(
            update(AIJob)
            .where(AIJob.id == not_yet)
            .values(next_run_at=utcnow() + timedelta(hours=1))
        )
    unmigrated = f"sqlite:///{tmp_path / 'empty.db'}"

    for url in (sqlite_store, unmigrated):
        app = app_for(make_app, redis_url, url)
        result = app.tasks[process_due_ai_tasks.name]()
        assert result == {"claimed": 0, "not_configured": ["AI_BASE_URL", "AI_MODEL"]}


def test_without_ai_settings_a_due_job_fails_the_beat_task_naming_them_and_is_not_claimed(
    make_app: MakeApp, clean_env: pytest.MonkeyPatch, redis_url: str, sqlite_store: str
) -> None:
    job_id = due_job(sqlite_store)
    app = app_for(make_app, redis_url, sqlite_store, ai_model=MODEL)

    with pytest.raises(PermanentError, match=r"1 AI job\(s\) due but AI_BASE_URL not set"):
        app.tasks[process_due_ai_tasks.name]()

    assert job_row(sqlite_store, job_id).lease_token is None


def test_a_configured_beat_task_on_a_store_never_migrated_says_how_to_migrate(
    make_app: MakeApp, clean_env: pytest.MonkeyPatch, redis_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    app = app_for(make_app, redis_url, url, ai_base_url="http://127.0.0.1:9/v1", ai_model=MODEL)

    with pytest.raises(PermanentError, match=r"no AI tables: run `celery .* db upgrade`"):
        app.tasks[process_due_ai_tasks.name]()
    dispose_all()


def test_the_beat_task_claims_each_due_job_once_and_publishes_one_run_for_it(
    configured: WorkerApp, sqlite_store: str, redis_client: redis.Redis
) -> None:
    due = {due_job(sqlite_store, f"job-{n}") for n in range(3)}
    later = due_job(sqlite_store, "later")
    with session_scope(sqlite_store) as session:
        session.execute(
            update(AIJob).where(AIJob.id == later).values(next_run_at=utcnow() + timedelta(hours=1))
        )

    first = configured.tasks[process_due_ai_tasks.name]()
    again = configured.tasks[process_due_ai_tasks.name]()

    assert (first, again) == ({"claimed": 3}, {"claimed": 0})
    runs = published_runs(redis_client)
    assert sorted(job_id for job_id, _ in runs) == sorted(due)
    for job_id, token in runs:
        assert job_row(sqlite_store, job_id).lease_token == token


def test_a_run_stores_the_answer_and_counts_the_request_and_its_tokens(
    configured: WorkerApp, sqlite_store: str, api: ChatAPI, redis_client: redis.Redis
) -> None:
    job_id, token = claimed_job(sqlite_store, system_prompt="Be brief.")
    before = utcnow()

    result = configured.tasks[run_ai_task.name](job_id, token)

    row = job_row(sqlite_store, job_id)
    assert result["status"] == "ok" and result["prompt_tokens"] == 20
    assert (row.last_answer, row.run_count, row.completion_tokens_total) == (
        "Three meetings today.",
        1,
        6,
    )
    assert row.next_run_at > before and row.lease_token is None
    (request,) = api.chat_requests()
    assert request.body["messages"][0] == {"role": "system", "content": "Be brief."}
    counts = domain_counts(configured, redis_client)
    assert counts[("pa_ai_requests", MODEL, "ok")] == 1
    assert counts[("pa_ai_tokens", MODEL, "prompt")] == 20
    assert counts[("pa_ai_tokens", MODEL, "completion")] == 6


def test_a_job_with_its_own_model_asks_that_model(
    configured: WorkerApp, sqlite_store: str, api: ChatAPI
) -> None:
    job_id, token = claimed_job(sqlite_store, model="other-model")

    configured.tasks[run_ai_task.name](job_id, token)

    assert api.chat_requests()[0].body["model"] == "other-model"


def test_a_redelivered_run_asks_nothing_and_records_nothing(
    configured: WorkerApp, sqlite_store: str, api: ChatAPI
) -> None:
    job_id, token = claimed_job(sqlite_store)
    configured.tasks[run_ai_task.name](job_id, token)

    again = configured.tasks[run_ai_task.name](job_id, token)

    assert again == {"job_id": job_id, "status": "stale"}
    assert len(api.chat_requests()) == 1
    assert job_row(sqlite_store, job_id).run_count == 1


def test_a_4xx_ends_the_run_with_its_error_and_the_schedule_goes_on(
    configured: WorkerApp, sqlite_store: str, api: ChatAPI, redis_client: redis.Redis
) -> None:
    job_id, token = claimed_job(sqlite_store)
    api.queue(Reply(400, error_body("This model's maximum context length is 8192 tokens")))

    with pytest.raises(PermanentError, match=r"'agenda': .*HTTP 400: This model's maximum"):
        configured.tasks[run_ai_task.name](job_id, token)

    row = job_row(sqlite_store, job_id)
    assert row.last_status == "error" and "maximum context length" in (row.last_error or "")
    assert row.next_run_at > utcnow() and row.lease_token is None
    assert domain_counts(configured, redis_client)[("pa_ai_requests", MODEL, "error")] == 1


def test_a_429_keeps_the_claim_through_the_wait_the_server_asked_for_and_retries(
    configured: WorkerApp, sqlite_store: str, api: ChatAPI, redis_client: redis.Redis
) -> None:
    job_id, token = claimed_job(sqlite_store)
    api.rate_limit_next("120")

    with pytest.raises(Retry):
        configured.tasks[run_ai_task.name](job_id, token)

    row = job_row(sqlite_store, job_id)
    assert row.lease_token == token and row.run_count == 0
    assert row.lease_expires_at is not None
    kept_for = (row.lease_expires_at - utcnow()).total_seconds()
    assert 120 + 600 - 5 < kept_for <= 120 + 600
    counts = domain_counts(configured, redis_client)
    assert counts[("pa_ai_rate_limited", MODEL)] == 1
    assert counts[("pa_ai_requests", MODEL, "rate_limited")] == 1


def test_the_last_allowed_failed_call_ends_the_run_saying_it_gave_up(
    configured: WorkerApp, sqlite_store: str, api: ChatAPI
) -> None:
    job_id, token = claimed_job(sqlite_store)
    api.fail_next(502)
    attempts = configured.settings.task_max_retries

    with pytest.raises(PermanentError, match=f"gave up after {attempts + 1} failed calls"):
        configured.tasks[run_ai_task.name](job_id, token, failed_attempts=attempts)

    assert job_row(sqlite_store, job_id).last_status == "error"


def test_a_cluster_rate_limit_wait_too_long_to_sleep_defers_the_run_without_asking(
    limited_app: Callable[[int], WorkerApp],
    redis_client: redis.Redis,
    sqlite_store: str,
    api: ChatAPI,
) -> None:
    app = limited_app(1)
    job_id, token = claimed_job(sqlite_store)
    assert rate_limit.acquire(redis_client, MODEL, 1) == 0.0  # another worker's request

    with pytest.raises(Retry):
        app.tasks[run_ai_task.name](job_id, token)

    assert api.chat_requests() == []
    row = job_row(sqlite_store, job_id)
    assert row.lease_expires_at is not None and row.lease_token == token
    assert (row.lease_expires_at - utcnow()).total_seconds() > 600 + 55


def test_a_short_cluster_rate_limit_wait_is_slept_in_the_task(
    limited_app: Callable[[int], WorkerApp], redis_client: redis.Redis, sqlite_store: str
) -> None:
    app = limited_app(150)
    job_id, token = claimed_job(sqlite_store)
    assert rate_limit.acquire(redis_client, MODEL, 150) == 0.0  # the next slot is 0.4 s away
    started = time.monotonic()

    result = app.tasks[run_ai_task.name](job_id, token)

    assert result["status"] == "ok"
    assert time.monotonic() - started >= 0.3


def test_a_worker_without_ai_settings_fails_a_claimed_run_naming_them(
    make_app: MakeApp, clean_env: pytest.MonkeyPatch, redis_url: str, sqlite_store: str
) -> None:
    job_id, token = claimed_job(sqlite_store)
    app = app_for(make_app, redis_url, sqlite_store)

    with pytest.raises(
        PermanentError, match="'agenda' cannot run: AI_BASE_URL and AI_MODEL not set"
    ):
        app.tasks[run_ai_task.name](job_id, token)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("1", "t"), "job_id must be an integer, got str"),
        ((True, "t"), "job_id must be an integer, got bool"),
        ((1, ""), "lease_token must be the token of a claim"),
        ((1, "x" * 65), "lease_token must be the token of a claim"),
        ((1, "t", "2"), "failed_attempts must be an integer >= 0"),
        ((1, "t", -1), "failed_attempts must be an integer >= 0"),
    ],
)
def test_run_arguments_that_no_claim_produces_are_refused(
    configured: WorkerApp, args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(PermanentError, match=message):
        configured.tasks[run_ai_task.name](*args)
