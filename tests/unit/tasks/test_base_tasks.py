"""BaseTask: retry of transient errors (with backoff.py's delays), ETA guard, progress, DLQ."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from sqlalchemy.exc import OperationalError

from personal_assistant.workers import constants as c
from personal_assistant.workers.app import WorkerApp
from personal_assistant.workers.broker.priority import redis_list_names
from personal_assistant.workers.config import WorkerSettings, load_settings
from personal_assistant.workers.dead_letters.queue import DeadLetterQueue
from personal_assistant.workers.errors import PermanentError, TransientError
from personal_assistant.workers.tasks import base_tasks, file_tasks
from personal_assistant.workers.tasks.base_tasks import BaseTask

PROBE = f"{c.TASKS_PACKAGE}.file_tasks.probe"


MakeApp = Callable[..., WorkerApp]


@pytest.fixture
def make_app(clean_env: pytest.MonkeyPatch) -> Iterator[MakeApp]:
    """Throwaway apps (not the current one) with these settings, to bind test tasks to."""
    apps: list[WorkerApp] = []

    def make(**settings: Any) -> WorkerApp:
        app = WorkerApp(load_settings(**settings), set_as_current=False)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def unit_app(make_app: MakeApp) -> WorkerApp:
    """A throwaway app with the default settings."""
    return make_app()


def register(app: WorkerApp, fun: Callable[..., Any], name: str) -> BaseTask:
    """``@app.task(base=BaseTask, bind=True)`` without a decorator, for mypy's sake."""
    task: BaseTask = app.task(base=BaseTask, bind=True, shared=False, name=name)(fun)
    return app.tasks[task.name]  # type: ignore[no-any-return]


def noop(self: BaseTask) -> None:
    """A task body that does nothing (Celery needs a named function, not a lambda)."""


def queued_messages(client: redis.Redis) -> int:
    """Messages waiting in any priority list of any domain queue."""
    return sum(int(client.llen(name)) for q in c.QUEUES for name in redis_list_names(q))


# --- retries through Celery ------------------------------------------------------------------


def test_a_transient_error_is_retried_with_backoff_until_the_task_succeeds(
    clean_env: pytest.MonkeyPatch, unit_app: WorkerApp
) -> None:
    asked: list[int] = []

    def recording_backoff(retries: int, **kwargs: Any) -> float:
        asked.append(retries)
        return 0.0

    clean_env.setattr(base_tasks, "backoff_delay", recording_backoff)
    attempts: list[int] = []

    def flaky(self: BaseTask) -> str:
        attempts.append(self.request.retries)
        if len(attempts) <= 2:
            raise TransientError("blip")
        return "done"

    result = register(unit_app, flaky, "unit.flaky").apply()

    assert attempts == [0, 1, 2]
    assert asked == [0, 1]
    assert result.state == "SUCCESS"
    assert result.result == "done"


def test_a_store_that_is_down_is_retried_like_a_redis_that_is_down(
    clean_env: pytest.MonkeyPatch, unit_app: WorkerApp
) -> None:
    clean_env.setattr(base_tasks, "backoff_delay", lambda retries, **kw: 0.0)
    attempts: list[int] = []

    def store_blip(self: BaseTask) -> str:
        attempts.append(self.request.retries)
        if len(attempts) == 1:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "done"

    result = register(unit_app, store_blip, "unit.store_blip").apply()

    assert attempts == [0, 1]
    assert result.result == "done"


def test_a_transient_error_out_of_retries_fails_with_the_original_error(
    clean_env: pytest.MonkeyPatch, make_app: MakeApp
) -> None:
    app = make_app(task_max_retries=3)
    clean_env.setattr(base_tasks, "backoff_delay", lambda retries, **kw: 0.0)
    attempts: list[int] = []

    def always_down(self: BaseTask) -> None:
        attempts.append(self.request.retries)
        raise TransientError(f"attempt {len(attempts)}")

    result = register(app, always_down, "unit.always_down").apply()

    assert attempts == [0, 1, 2, 3]
    assert result.state == "FAILURE"
    assert isinstance(result.result, TransientError)
    assert str(result.result) == "attempt 4"


def test_a_permanent_error_is_not_retried(unit_app: WorkerApp) -> None:
    attempts: list[int] = []

    def broken(self: BaseTask) -> None:
        attempts.append(self.request.retries)
        raise PermanentError("bad input")

    result = register(unit_app, broken, "unit.broken").apply()

    assert attempts == [0]
    assert result.state == "FAILURE"
    assert isinstance(result.result, PermanentError)


# --- the countdown/ETA guard -----------------------------------------------------------------


@pytest.fixture
def probe(clean_env: pytest.MonkeyPatch, producer_app: WorkerApp) -> BaseTask:
    """file_tasks.probe bound to the app that publishes to the test Redis."""
    producer_app.loader.import_default_modules()
    task: BaseTask = producer_app.tasks[PROBE]
    assert task.app is producer_app
    return task


@pytest.mark.parametrize(
    "when",
    [
        {"countdown": c.MAX_COUNTDOWN_S + 1},
        {"countdown": 10**6},
        {"eta": datetime.now(UTC) + timedelta(seconds=c.MAX_COUNTDOWN_S + 600)},
        {"eta": (datetime.now(UTC) + timedelta(days=2)).replace(tzinfo=None).isoformat()},
        {"countdown": 1, "eta": datetime.now(UTC) + timedelta(days=1)},
    ],
    ids=["countdown-just-over", "countdown-huge", "eta-aware", "eta-naive-string", "eta-wins"],
)
def test_a_countdown_or_eta_beyond_max_countdown_is_refused_and_nothing_is_published(
    probe: BaseTask, redis_client: redis.Redis, when: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="MAX_COUNTDOWN") as caught:
        probe.apply_async(**when)

    assert PROBE in str(caught.value)
    assert queued_messages(redis_client) == 0


@pytest.mark.parametrize(
    "when",
    [
        {},
        {"countdown": 10},
        {"countdown": c.MAX_COUNTDOWN_S},
        {"eta": datetime.now(UTC) + timedelta(minutes=30)},
    ],
    ids=["now", "short-countdown", "countdown-at-limit", "eta-within-limit"],
)
def test_a_countdown_within_max_countdown_is_published(
    probe: BaseTask, redis_client: redis.Redis, when: dict[str, Any]
) -> None:
    probe.apply_async(**when)

    file_queue = sum(int(redis_client.llen(name)) for name in redis_list_names(c.FILE_QUEUE))
    assert file_queue == 1
    assert queued_messages(redis_client) == 1


def test_the_module_task_refuses_a_far_countdown_before_touching_the_broker(
    clean_env: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []
    task = file_tasks.probe
    clean_env.setattr(task.app, "send_task", lambda *a, **kw: sent.append("sent"))

    with pytest.raises(ValueError, match="MAX_COUNTDOWN"):
        task.apply_async(countdown=10**6)

    assert sent == []


def test_max_countdown_comes_from_the_settings_of_the_tasks_app(
    make_app: MakeApp, redis_url: str, redis_client: redis.Redis
) -> None:
    strict = make_app(celery_broker_url=redis_url, max_countdown=60)
    default = make_app(celery_broker_url=redis_url)

    with pytest.raises(ValueError, match=r"exceeds MAX_COUNTDOWN \(60s\)"):
        strict.tasks[PROBE].apply_async(countdown=61)
    default.tasks[PROBE].apply_async(countdown=61)

    assert queued_messages(redis_client) == 1


def test_a_task_reads_the_settings_of_its_app_not_of_the_process(make_app: MakeApp) -> None:
    one, other = make_app(task_max_retries=1), make_app(task_max_retries=7)

    assert one.tasks[PROBE].settings is one.settings
    assert other.tasks[PROBE].settings.task_max_retries == 7


# --- progress --------------------------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def progress_task(
    unit_app: WorkerApp, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BaseTask, Clock, list[dict[str, Any]]]]:
    """A task running under a request id, a hand-moved clock, and the states it published."""

    def long_job(self: BaseTask) -> None:
        """Never run: the test drives report_progress itself."""

    task = register(unit_app, long_job, "unit.long_job")
    clock = Clock(1000.0)
    published: list[dict[str, Any]] = []

    def update_state(
        task_id: str | None = None, state: str | None = None, meta: Any = None
    ) -> None:
        published.append({"state": state, **meta})

    monkeypatch.setattr(base_tasks, "time", SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(task, "update_state", update_state)
    task.push_request(id="task-1", called_directly=False)
    yield task, clock, published
    task.pop_request()


def test_progress_is_published_with_done_total_and_percent(
    progress_task: tuple[BaseTask, Clock, list[dict[str, Any]]],
) -> None:
    task, _, published = progress_task

    task.report_progress(25, 200, "resizing")

    assert published == [
        {"state": "PROGRESS", "done": 25, "total": 200, "message": "resizing", "percent": 12.5}
    ]


def test_progress_without_a_total_has_no_percent(
    progress_task: tuple[BaseTask, Clock, list[dict[str, Any]]],
) -> None:
    task, _, published = progress_task

    task.report_progress(7)

    assert published == [{"state": "PROGRESS", "done": 7, "total": None, "message": ""}]


def test_progress_is_throttled_but_the_final_report_always_goes_out(
    progress_task: tuple[BaseTask, Clock, list[dict[str, Any]]],
) -> None:
    task, clock, published = progress_task
    interval = c.PROGRESS_MIN_INTERVAL_S

    task.report_progress(1, 10)
    clock.now += interval * 0.4
    task.report_progress(2, 10)  # too soon: dropped
    clock.now += interval * 0.7
    task.report_progress(3, 10)  # an interval after the first: published
    clock.now += interval * 0.1
    task.report_progress(10, 10)  # final: published despite the throttle

    assert [p["done"] for p in published] == [1, 3, 10]
    assert published[-1]["percent"] == 100.0


def test_a_failure_to_publish_progress_is_logged_not_raised(
    progress_task: tuple[BaseTask, Clock, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    task, _, _ = progress_task

    def broken_backend(**kwargs: Any) -> None:
        raise redis.ConnectionError("backend down")

    monkeypatch.setattr(task, "update_state", broken_backend)
    with caplog.at_level(logging.WARNING, logger=base_tasks.__name__):
        task.report_progress(1, 2)

    assert "could not publish progress" in caplog.text


def test_progress_of_a_task_called_directly_publishes_nothing(
    unit_app: WorkerApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[Any] = []

    def job(self: BaseTask) -> None:
        self.report_progress(1, 1)

    task = register(unit_app, job, "unit.direct")
    monkeypatch.setattr(task, "update_state", lambda **kw: published.append(kw))

    task()

    assert published == []


# --- dead letters and diagnostics ------------------------------------------------------------


@pytest.fixture
def broker_dlq(redis_client: redis.Redis) -> Iterator[DeadLetterQueue]:
    """The dead-letter queue on the test Redis."""
    base_tasks._dead_letter_queue.cache_clear()
    yield DeadLetterQueue(redis_client)
    base_tasks._dead_letter_queue.cache_clear()


@pytest.fixture
def dlq_app(make_app: MakeApp, redis_url: str) -> WorkerApp:
    """An app whose broker (and so dead-letter queue) is the test Redis."""
    return make_app(celery_broker_url=redis_url)


def failed(task: BaseTask, *, is_eager: bool = False) -> None:
    """Run on_failure as the worker does after a final failure of ``task``."""
    task.push_request(
        id="task-42",
        is_eager=is_eager,
        retries=2,
        hostname="worker-1@host",
        delivery_info={"routing_key": c.FILE_QUEUE, "priority": 3},
    )
    try:
        einfo = SimpleNamespace(traceback="Traceback (most recent call last):\n  boom")
        task.on_failure(PermanentError("boom"), "task-42", [1, "a"], {"k": True}, einfo)
    finally:
        task.pop_request()


def test_a_final_failure_is_written_to_the_dead_letter_queue(
    broker_dlq: DeadLetterQueue, dlq_app: WorkerApp
) -> None:
    task = register(dlq_app, noop, "unit.fails")

    failed(task)

    [letter] = broker_dlq.list()
    assert (letter.task_name, letter.task_id) == ("unit.fails", "task-42")
    assert (letter.args, letter.kwargs) == ([1, "a"], {"k": True})
    assert (letter.exception_type, letter.exception) == ("PermanentError", "boom")
    assert letter.traceback.endswith("boom")
    assert (letter.queue, letter.priority, letter.retries) == (c.FILE_QUEUE, 3, 2)
    assert letter.hostname == "worker-1@host"


def test_an_eager_failure_is_not_dead_lettered(
    broker_dlq: DeadLetterQueue, dlq_app: WorkerApp
) -> None:
    task = register(dlq_app, noop, "unit.eager_fails")

    failed(task, is_eager=True)

    assert len(broker_dlq) == 0


def test_a_task_that_opts_out_of_dead_letters_is_not_dead_lettered(
    broker_dlq: DeadLetterQueue, dlq_app: WorkerApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = register(dlq_app, noop, "unit.no_dlq")
    monkeypatch.setattr(task, "dead_letter", False)

    failed(task)

    assert len(broker_dlq) == 0


def test_an_unreachable_dead_letter_queue_is_logged_and_does_not_raise(
    clean_env: pytest.MonkeyPatch, unit_app: WorkerApp, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(settings: WorkerSettings) -> DeadLetterQueue:
        raise redis.ConnectionError("no redis")

    clean_env.setattr(base_tasks, "dead_letter_queue", unreachable)
    task = register(unit_app, noop, "unit.dlq_down")

    with caplog.at_level(logging.ERROR, logger=base_tasks.__name__):
        failed(task)

    assert "could not be written to the dead-letter queue" in caplog.text


def test_describe_execution_reports_queue_priority_host_and_retries(unit_app: WorkerApp) -> None:
    task = register(unit_app, noop, "unit.where")
    task.push_request(
        retries=1, hostname="w@h", delivery_info={"routing_key": c.AI_QUEUE, "priority": 9}
    )
    try:
        where = task.describe_execution()
    finally:
        task.pop_request()

    assert where["task"] == "unit.where"
    assert (where["queue"], where["priority"]) == (c.AI_QUEUE, 9)
    assert (where["hostname"], where["retries"]) == ("w@h", 1)
    assert isinstance(where["pid"], int)
