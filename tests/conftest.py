"""Fixtures shared by every test: private Redis and PostgreSQL servers, and worker processes."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from personal_assistant.workers.celery_app import WorkerApp, create_app
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.schedulers.enhanced_scheduler import EnhancedScheduler
from personal_assistant.workers.store.engine import dispose_all
from personal_assistant.workers.store.migrate import upgrade
from tests.support import tasks as _test_tasks  # noqa: F401 - registers the shared test tasks
from tests.support.alert_servers import WEBHOOK_SECRET, Receiver
from tests.support.certificates import Certificate, make_certificate
from tests.support.postgres_server import PostgresNotInstalled, PostgresServer
from tests.support.redis_server import RedisServer, free_port
from tests.support.worker import WorkerProcess

# tools/ holds scripts (compose_check, promql_check, stack_config, local_stack), not a package:
# the tests of those import them by name.
TOOLS = Path(__file__).resolve().parents[1] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))


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
def beat_metrics(redis_url: str) -> Iterator[Callable[..., int]]:
    """Start a beat (the scheduler, in this process, with the given settings) that holds the
    lock and serves /metrics; returns its port: where the cluster-wide series come from."""
    started: list[tuple[WorkerApp, EnhancedScheduler]] = []

    def start(**settings: Any) -> int:
        port = free_port()
        app = create_app(
            load_settings(celery_broker_url=redis_url, beat_metrics_port=port, **settings)
        )
        scheduler = EnhancedScheduler(app=app)
        started.append((app, scheduler))
        scheduler.tick()  # takes the lock and starts serving
        assert scheduler.token is not None and scheduler.exports is not None
        return port

    yield start
    for app, scheduler in started:
        scheduler.close()
        app.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One private PostgreSQL cluster for the session, on a free port; never the machine's own.

    Missing server binaries fail the tests that need it (never skip them: the PostgreSQL paths
    must be tested); ``make test`` installs the binaries through ``make system-deps``.
    """
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        server.start()
    except PostgresNotInstalled as error:
        not_installed = str(error)
    else:
        not_installed = ""
    if not_installed:  # failed outside the except block: one message, not a chain of two
        pytest.fail(not_installed, pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made for this run."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[str]:
    """The URL of a migrated SQLite store of this test (its engines closed afterwards)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    yield url
    dispose_all()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated store of each kind: a new SQLite file, then a fresh PostgreSQL database
    (the queries that claim, lock and upsert differ between the two)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    upgrade(url)
    yield url
    dispose_all()  # before postgres_url drops the database: it refuses while connections live


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the private cluster, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    # The store's engines keep pooled connections to it: close them before the drop.
    dispose_all()
    postgres_server.drop_database(name)


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
