"""AI jobs in the store (SQLite and PostgreSQL): a due job is claimed exactly once even by
concurrent claimers, an expired claim is taken over, only the claim's holder records a result,
the next run is computed from when the run ended, and bad jobs are refused naming the field."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from personal_assistant.workers.ai import jobs
from personal_assistant.workers.ai.chat_client import Completion
from personal_assistant.workers.ai.jobs import Claim, JobError, JobSpec
from personal_assistant.workers.ai.schedule import ScheduleError
from personal_assistant.workers.store.ai_models import AIJob, AIRun
from personal_assistant.workers.store.engine import session_scope
from personal_assistant.workers.store.migrate import upgrade

# A Monday, 09:00 UTC.
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
LEASE_S = 60.0
ANSWER = Completion("Forty-two.", prompt_tokens=12, completion_tokens=3, model="m-2025")


def add_job(url: str, name: str = "digest", *, due: datetime | None = T0, **fields: object) -> int:
    """Store a job (hourly unless told otherwise); ``due`` sets its next run."""
    spec_fields: dict[str, object] = {"cron": "0 * * * *"} | fields
    spec = JobSpec(name=name, prompt=f"Summarise {name}.", **spec_fields)  # type: ignore[arg-type]
    with session_scope(url) as session:
        job_id = jobs.upsert_job(session, spec, T0 - timedelta(days=1))
        if due is not None:
            session.execute(update(AIJob).where(AIJob.id == job_id).values(next_run_at=due))
    return job_id


def claim(url: str, now: datetime = T0, limit: int = 10) -> list[Claim]:
    with session_scope(url) as session:
        return jobs.claim_due(session, limit, LEASE_S, now)


def job_row(url: str, job_id: int) -> AIJob:
    with session_scope(url) as session:
        job = session.get(AIJob, job_id)
        assert job is not None
        return job


def finish(url: str, found: Claim, now: datetime, completion: Completion = ANSWER) -> bool:
    with session_scope(url) as session:
        return jobs.finish_run(session, found.job_id, found.token, completion, now)


def run_count(url: str, job_id: int) -> int:
    with session_scope(url) as session:
        return int(session.scalar(select(func.count()).where(AIRun.job_id == job_id)) or 0)


def test_a_new_job_first_runs_at_its_first_scheduled_time(sqlite_store: str) -> None:
    job_id = add_job(sqlite_store, due=None, cron="30 9 * * *", timezone="Europe/Berlin")

    # Created at T0 - 1 day (09:00 UTC = 10:00 Berlin): 09:30 Berlin the next day.
    assert job_row(sqlite_store, job_id).next_run_at == T0 - timedelta(minutes=30)


def test_a_due_job_is_claimed_with_a_token_and_then_not_again_while_claimed(any_store: str) -> None:
    job_id = add_job(any_store)
    add_job(any_store, "later", due=T0 + timedelta(minutes=1))
    add_job(any_store, "off", enabled=False)

    (first,) = claim(any_store)

    assert first.job_id == job_id and len(first.token) == 32
    assert claim(any_store, T0 + timedelta(seconds=LEASE_S - 1)) == []
    row = job_row(any_store, job_id)
    assert row.lease_token == first.token
    assert row.lease_expires_at == T0 + timedelta(seconds=LEASE_S)


def test_two_concurrent_claimers_never_claim_the_same_job(any_store: str) -> None:
    due_ids = {add_job(any_store, f"job-{n}") for n in range(12)}
    claimed: list[list[Claim]] = [[], []]
    start = threading.Barrier(2)

    def claimer(index: int) -> None:
        start.wait()
        while batch := claim(any_store, limit=2):
            claimed[index].extend(batch)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ids = [c.job_id for c in claimed[0] + claimed[1]]
    assert sorted(ids) == sorted(due_ids)  # every job once, none twice


def test_an_expired_claim_is_taken_over_and_its_old_holder_records_nothing(any_store: str) -> None:
    job_id = add_job(any_store)
    (old,) = claim(any_store)

    (new,) = claim(any_store, T0 + timedelta(seconds=LEASE_S))

    assert new.job_id == job_id and new.token != old.token
    assert finish(any_store, old, T0 + timedelta(seconds=70)) is False
    row = job_row(any_store, job_id)
    assert (row.run_count, row.last_answer, row.lease_token) == (0, None, new.token)
    assert run_count(any_store, job_id) == 0
    assert finish(any_store, new, T0 + timedelta(seconds=75)) is True


def test_finishing_stores_answer_tokens_and_the_next_run_from_the_end_of_the_run(
    any_store: str,
) -> None:
    job_id = add_job(any_store)
    # The workers were down for three days: the hourly job runs once, then at its next hour.
    late = T0 + timedelta(days=3, minutes=20)
    (found,) = claim(any_store, late)

    assert finish(any_store, found, late + timedelta(seconds=5)) is True

    row = job_row(any_store, job_id)
    assert row.last_answer == "Forty-two." and row.last_status == "ok"
    assert (row.run_count, row.prompt_tokens_total, row.completion_tokens_total) == (1, 12, 3)
    assert row.last_run_at == late + timedelta(seconds=5)
    assert row.next_run_at == T0 + timedelta(days=3, hours=1)
    assert (row.lease_token, row.lease_expires_at) == (None, None)
    assert claim(any_store, late + timedelta(minutes=1)) == []
    with session_scope(any_store) as session:
        (run,) = session.scalars(select(AIRun).where(AIRun.job_id == job_id)).all()
        assert (run.status, run.model, run.answer) == ("ok", "m-2025", "Forty-two.")
        assert (run.prompt_tokens, run.completion_tokens) == (12, 3)


def test_a_redelivered_finish_with_the_same_token_records_nothing_twice(any_store: str) -> None:
    job_id = add_job(any_store)
    (found,) = claim(any_store)
    assert finish(any_store, found, T0 + timedelta(seconds=5)) is True

    assert finish(any_store, found, T0 + timedelta(seconds=6)) is False

    assert job_row(any_store, job_id).run_count == 1
    assert run_count(any_store, job_id) == 1


def test_a_failed_run_records_the_error_and_the_schedule_goes_on(any_store: str) -> None:
    job_id = add_job(any_store, interval_seconds=3600, cron=None)
    (found,) = claim(any_store)

    with session_scope(any_store) as session:
        assert jobs.fail_run(session, found.job_id, found.token, "HTTP 401", T0, model="m")

    row = job_row(any_store, job_id)
    assert (row.last_status, row.last_error, row.run_count) == ("error", "HTTP 401", 1)
    assert row.next_run_at == T0 + timedelta(hours=1)
    assert row.lease_token is None


def test_renewing_a_claim_keeps_it_only_for_its_holder(sqlite_store: str) -> None:
    job_id = add_job(sqlite_store)
    (found,) = claim(sqlite_store)
    later = T0 + timedelta(minutes=10)

    with session_scope(sqlite_store) as session:
        assert jobs.renew_lease(session, job_id, found.token, later) is True
        assert jobs.renew_lease(session, job_id, "not-the-token", later) is False

    assert claim(sqlite_store, T0 + timedelta(minutes=5)) == []
    assert job_row(sqlite_store, job_id).lease_expires_at == later


def test_only_the_newest_runs_of_a_job_are_kept(
    sqlite_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "RUNS_KEPT", 3)
    job_id = add_job(sqlite_store)
    now = T0
    for n in range(5):
        (found,) = claim(sqlite_store, now)
        finish(sqlite_store, found, now, Completion(f"answer {n}", 1, 1, "m"))
        now = job_row(sqlite_store, job_id).next_run_at

    with session_scope(sqlite_store) as session:
        answers = session.scalars(select(AIRun.answer).where(AIRun.job_id == job_id)).all()
    assert sorted(a or "" for a in answers) == ["answer 2", "answer 3", "answer 4"]


def test_changing_a_job_by_name_reschedules_it_only_when_its_schedule_changes(
    sqlite_store: str,
) -> None:
    job_id = add_job(sqlite_store)
    with session_scope(sqlite_store) as session:
        same_id = jobs.upsert_job(
            session, JobSpec("digest", "New prompt.", cron="0 * * * *"), T0 + timedelta(hours=5)
        )
    row = job_row(sqlite_store, job_id)
    assert same_id == job_id
    assert (row.prompt, row.next_run_at) == ("New prompt.", T0)

    with session_scope(sqlite_store) as session:
        jobs.upsert_job(session, JobSpec("digest", "New prompt.", cron="15 * * * *"), T0)
    assert job_row(sqlite_store, job_id).next_run_at == T0 + timedelta(minutes=15)


def test_a_job_enabled_again_skips_the_times_it_missed(sqlite_store: str) -> None:
    job_id = add_job(sqlite_store)
    with session_scope(sqlite_store) as session:
        assert jobs.set_enabled(session, "digest", False, T0)
    assert claim(sqlite_store, T0 + timedelta(days=2)) == []

    with session_scope(sqlite_store) as session:
        assert jobs.set_enabled(session, "digest", True, T0 + timedelta(days=2, minutes=1))
        assert not jobs.set_enabled(session, "no-such-job", True, T0)

    assert job_row(sqlite_store, job_id).next_run_at == T0 + timedelta(days=2, hours=1)


def test_deleting_a_job_removes_its_runs_and_a_run_in_flight_then_records_nothing(
    sqlite_store: str,
) -> None:
    job_id = add_job(sqlite_store)
    (first,) = claim(sqlite_store)
    finish(sqlite_store, first, T0)
    (in_flight,) = claim(sqlite_store, T0 + timedelta(hours=1))

    with session_scope(sqlite_store) as session:
        assert jobs.delete_job(session, "digest") is True
        assert jobs.delete_job(session, "digest") is False

    assert finish(sqlite_store, in_flight, T0 + timedelta(hours=1)) is False
    assert run_count(sqlite_store, job_id) == 0


def test_a_job_whose_stored_schedule_became_invalid_is_disabled_with_the_reason(
    sqlite_store: str,
) -> None:
    job_id = add_job(sqlite_store)
    with session_scope(sqlite_store) as session:
        session.execute(update(AIJob).where(AIJob.id == job_id).values(cron="every hour"))
    (found,) = claim(sqlite_store)

    assert finish(sqlite_store, found, T0) is True

    row = job_row(sqlite_store, job_id)
    assert row.enabled is False
    assert row.last_error is not None and row.last_error.startswith("disabled: cron 'every hour'")


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"name": " "}, JobError, "name must be non-empty"),
        ({"name": "x" * 129}, JobError, "at most 128"),
        ({"name": "a\nb"}, JobError, "printable"),
        ({"prompt": ""}, JobError, "prompt must be non-empty"),
        ({"prompt": "x" * (jobs.MAX_PROMPT_CHARS + 1)}, JobError, "the limit is 200000"),
        ({"system_prompt": "  "}, JobError, "system_prompt must be non-empty"),
        ({"model": "gpt 4"}, JobError, "model must be a name"),
        ({"enabled": "yes"}, JobError, "enabled must be true or false"),
        ({"cron": None}, ScheduleError, "exactly one of cron and interval"),
        ({"interval_seconds": 3600}, ScheduleError, "exactly one of cron and interval"),
        ({"timezone": "Berlin"}, ScheduleError, "unknown time zone 'Berlin'"),
    ],
)
def test_a_bad_job_is_refused_naming_the_field_and_nothing_is_stored(
    sqlite_store: str, fields: dict[str, object], error: type[Exception], message: str
) -> None:
    values: dict[str, object] = {"name": "bad", "prompt": "Hello.", "cron": "0 9 * * *"} | fields

    with pytest.raises(error, match=message), session_scope(sqlite_store) as session:
        jobs.upsert_job(session, JobSpec(**values), T0)  # type: ignore[arg-type]

    with session_scope(sqlite_store) as session:
        assert session.scalar(select(func.count(AIJob.id))) == 0


def test_the_store_says_whether_it_has_been_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    assert jobs.has_ai_tables(url) is False

    upgrade(url)
    assert jobs.has_ai_tables(url) is True
