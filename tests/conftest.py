"""Fixtures shared by every test: a private Redis server and worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from personal_assistant.workers.celery_app import WorkerApp, create_app
from personal_assistant.workers.config import load_settings
from tests.support import tasks as _test_tasks  # noqa: F401 - registers the shared test tasks
from tests.support.alert_servers import WEBHOOK_SECRET, Receiver
from tests.support.redis_server import RedisServer
from tests.support.worker import WorkerProcess


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session, on a free port; never the machine's own."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private server's URL, emptied for this test."""
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the emptied private server."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def producer_app(redis_url: str) -> Iterator[WorkerApp]:
    """An app configured like production but pointed at the test broker, to publish with."""
    app = create_app(
        load_settings(
            celery_broker_url=redis_url,
            celery_result_backend=redis_url,
            workflow_allowed_tasks=["tests.*"],
        )
    )
    yield app
    app.close()


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    """A webhook receiver on loopback that checks signatures with ``WEBHOOK_SECRET``."""
    server = Receiver(secret=WEBHOOK_SECRET)
    yield server
    server.close()


@pytest.fixture
def start_worker(
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; all are stopped (and their logs shown on failure) at the end."""
    workers: list[WorkerProcess] = []

    def start(queues: list[str], **kwargs: Any) -> WorkerProcess:
        kwargs.setdefault("app", "tests.support.celery_test_app")
        worker = WorkerProcess(redis_url, queues, log_dir=tmp_path / "logs", **kwargs).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:  # all at once: a warm shutdown takes about two seconds each
        worker.terminate()
    for worker in workers:
        worker.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for worker in workers:
            print(f"--- log of {worker.hostname} ---\n{worker.log()[-5000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
