"""The e-mail outbox end to end: real worker processes, a SQLite store, aiosmtpd on loopback.

- ``enqueue_email`` -> ``send_email`` on a worker -> received over STARTTLS with login, with the
  Message-ID ``enqueue_email`` returned; a 5xx rejection fails the message at once with a dead
  letter holding the server's reply, and replaying that letter re-sends it;
- without SMTP_HOST an idle sweep succeeds saying so, and mail waiting fails the tasks naming
  the variable, leaving the mail untouched and the worker running;
- two workers drain one outbox of 1,000 messages: each is received exactly once; then, with one
  worker SIGKILLed mid-drain, none is missing and the only duplicates are messages that were
  in flight at the kill (at most one: a worker sends one message at a time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from sqlalchemy import func, select

from personal_assistant.workers import constants as c
from personal_assistant.workers.app import WorkerApp, create_app
from personal_assistant.workers.config import load_settings
from personal_assistant.workers.dead_letters.queue import DeadLetterQueue
from personal_assistant.workers.mail import outbox
from personal_assistant.workers.metrics.domain_counters import read_domain_counts
from personal_assistant.workers.metrics.domain_series import EMAIL_FAILED, EMAIL_SENT
from personal_assistant.workers.schedulers.email_scheduler import SEND_EMAIL_TASK, enqueue_email
from personal_assistant.workers.store.email_models import FAILED, PENDING, SENDING, SENT
from personal_assistant.workers.store.email_models import OutboxMessage as Row
from personal_assistant.workers.store.engine import session_scope
from personal_assistant.workers.tasks import email_tasks  # noqa: F401 - registers them for replay
from tests.support.alert_servers import LoopbackSMTP
from tests.support.certificates import Certificate
from tests.support.redis_server import free_port
from tests.support.smtp_outbox import OutboxMailbox, smtp_server
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

SWEEP = f"{c.TASKS_PACKAGE}.email_tasks.process_email_queue"
SENDER = "Assistant <assistant@example.org>"
USER = "outbox"
PASSWORD = "smtp-Pa55word-never-logged"  # noqa: S105 - a test secret
DRAIN = 1000


@pytest.fixture
def backend(redis_url: str, sqlite_store: str) -> Iterator[WorkerApp]:
    """The backend's app: it enqueues mail into the store and publishes to the broker."""
    app = create_app(
        load_settings(
            celery_broker_url=redis_url,
            celery_result_backend=redis_url,
            database_url=sqlite_store,
            email_from=SENDER,
        )
    )
    yield app
    app.close()


def smtp_env(sqlite_store: str, port: int | None, **extra: str) -> dict[str, str]:
    env = {"DATABASE_URL": sqlite_store, "EMAIL_FROM": SENDER, "SMTP_TIMEOUT": "2", **extra}
    if port is not None:
        env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(port))
    return env


def start_two(start: Callable[..., WorkerProcess], env: dict[str, str]) -> list[WorkerProcess]:
    """Two email workers, started side by side (each takes a second or two to be ready), each
    with its own metrics port."""
    envs = [{**env, "METRICS_PORT": str(free_port())} for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda e: start([c.EMAIL_QUEUE], env=e), envs))


def stop_before_the_server(workers: list[WorkerProcess]) -> None:
    """SIGKILL the workers (done with them: no warm shutdown needed) while the SMTP server still
    runs, and let it see their connections close: a connection the server is stopped under
    leaves an unclosed transport, reported as a warning in whichever test comes next."""
    for worker in workers:
        worker.kill_hard()
    time.sleep(0.2)


def fill(sqlite_store: str, count: int) -> set[str]:
    """``count`` messages in the outbox in one transaction; their Message-IDs."""
    settings = load_settings(email_from=SENDER)
    with session_scope(sqlite_store) as session:
        return {
            outbox.enqueue(session, settings, f"user{n}@example.org", f"n{n}", "body").message_id
            for n in range(count)
        }


def count(sqlite_store: str, status: str) -> int:
    with session_scope(sqlite_store) as session:
        query = select(func.count()).select_from(Row).where(Row.status == status)
        return int(session.scalar(query) or 0)


def status_of(sqlite_store: str, message_id: str) -> tuple[str, int]:
    with session_scope(sqlite_store) as session:
        row = session.scalars(select(Row).where(Row.message_id == message_id)).one()
        return row.status, row.attempts


def test_enqueued_mail_arrives_over_starttls_and_a_5xx_rejection_is_dead_lettered(
    sqlite_store: str,
    backend: WorkerApp,
    redis_client: redis.Redis,
    certificate: Certificate,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    mailbox = OutboxMailbox(
        user=USER,
        password=PASSWORD,
        rcpt_replies={"nobody@example.org": "550 5.1.1 <nobody@example.org>: no such user"},
    )
    with smtp_server(
        mailbox,
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=mailbox.authenticate,
    ) as server:
        worker = start_worker(
            [c.EMAIL_QUEUE],
            env=smtp_env(
                sqlite_store,
                server.port,
                SMTP_SECURITY="starttls",
                SMTP_USERNAME=USER,
                SMTP_PASSWORD=PASSWORD,
                SSL_CERT_FILE=str(certificate.cert),  # trusted as an operator would
            ),
        )
        message_id = enqueue_email(
            "ann@example.org", "Dentist", "Tomorrow at 3.", html="<p>Tomorrow</p>", app=backend
        )
        rejected_id = enqueue_email("nobody@example.org", "Hello", "Anyone?", app=backend)

        (received,) = mailbox.wait(1)
        assert received.message_id == message_id
        assert received.rcpt_tos == ("ann@example.org",)
        assert received.parsed()["Subject"] == "Dentist"
        assert mailbox.logins and all(mailbox.logins)
        assert wait_for(lambda: status_of(sqlite_store, message_id) == (SENT, 1), timeout=10)

        dlq = DeadLetterQueue(redis_client)
        (letter,) = wait_for(dlq.list, timeout=10)
        assert status_of(sqlite_store, rejected_id) == (FAILED, 1)
        assert letter.task_name == SEND_EMAIL_TASK
        assert "550 5.1.1 <nobody@example.org>: no such user" in letter.exception
        assert rejected_id in letter.exception

        # The address exists now: replaying the dead letter (what `celery ... dlq replay`
        # does) re-sends the message, once.
        mailbox.rcpt_replies.clear()
        dlq.replay(letter.id, backend)
        resent = mailbox.wait(2)[1]
        assert (resent.message_id, resent.rcpt_tos) == (rejected_id, ("nobody@example.org",))
        assert wait_for(lambda: status_of(sqlite_store, rejected_id)[0] == SENT, timeout=10)

    # The worker's counts reach Redis within a second of each send.
    wait_for(lambda: read_domain_counts(redis_client).get((EMAIL_SENT.name,)) == 2, timeout=10)
    assert read_domain_counts(redis_client)[(EMAIL_FAILED.name,)] == 1
    assert PASSWORD not in worker.log()
    worker.kill_hard()  # done with it: no need to wait for a warm shutdown


def test_without_smtp_host_the_sweep_says_so_and_waiting_mail_fails_the_task_clearly(
    sqlite_store: str,
    backend: WorkerApp,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker([c.EMAIL_QUEUE], env=smtp_env(sqlite_store, None))

    idle = backend.send_task(SWEEP).get(timeout=30)
    assert idle["not_configured"] == ["SMTP_HOST"]
    assert idle["sent"] == 0

    message_id = enqueue_email("ann@example.org", "Hi", "text", app=backend)
    (letter,) = wait_for(DeadLetterQueue(redis_client).list, timeout=15)
    assert letter.exception_type == "PermanentError"
    assert "cannot be sent: SMTP_HOST not set" in letter.exception
    with pytest.raises(Exception, match=r"1 e-mail\(s\) due but SMTP_HOST not set"):
        backend.send_task(SWEEP).get(timeout=30)

    assert status_of(sqlite_store, message_id) == (PENDING, 0)  # untouched, sent once configured
    assert worker.process is not None and worker.process.poll() is None
    probe = backend.send_task(f"{c.TASKS_PACKAGE}.email_tasks.probe").get(timeout=30)
    assert probe["queue"] == c.EMAIL_QUEUE
    worker.kill_hard()  # done with it: no need to wait for a warm shutdown


def drain_env(sqlite_store: str, server: LoopbackSMTP) -> dict[str, str]:
    # A short lease, so a killed worker's messages come back within the test.
    return smtp_env(
        sqlite_store,
        server.port,
        SMTP_SECURITY="none",
        EMAIL_BATCH_SIZE="50",
        EMAIL_LEASE_SECONDS="1.5",
        SMTP_TIMEOUT="0.5",
    )


def sweep_until_sent(backend: WorkerApp, sqlite_store: str, total: int, timeout: float) -> None:
    """Publish sweeps (as beat would, faster) until every message is sent."""
    deadline = time.monotonic() + timeout
    published = 0.0
    while count(sqlite_store, SENT) < total:
        assert time.monotonic() < deadline, f"{count(sqlite_store, SENT)} of {total} sent"
        if time.monotonic() - published > 0.5:
            backend.send_task(SWEEP)
            published = time.monotonic()
        time.sleep(0.1)


def test_two_workers_drain_1000_messages_each_received_exactly_once(
    sqlite_store: str,
    backend: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # 3 ms a message: one worker alone would need 3 s, so the other surely joins in.
    mailbox = OutboxMailbox(pace_seconds=0.003)
    with smtp_server(mailbox) as server:
        workers = start_two(start_worker, drain_env(sqlite_store, server))
        expected = fill(sqlite_store, DRAIN)
        for _ in range(4):  # more sweeps than workers: both take part
            backend.send_task(SWEEP)
        mailbox.wait(DRAIN, timeout=60)
        sweep_until_sent(backend, sqlite_store, DRAIN, timeout=30)
        # Both took part (each logs its sweep's summary just after its last mark).
        wait_for(lambda: all("e-mail outbox: " in w.log() for w in workers), timeout=10)
        stop_before_the_server(workers)

    copies = mailbox.copies()
    assert set(copies) == expected
    assert max(copies.values()) == 1


def test_a_worker_killed_mid_drain_loses_nothing_and_duplicates_only_what_was_in_flight(
    sqlite_store: str,
    backend: WorkerApp,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    mailbox = OutboxMailbox()
    with smtp_server(mailbox) as server:
        victim, survivor = start_two(start_worker, drain_env(sqlite_store, server))
        expected = fill(sqlite_store, DRAIN)
        for _ in range(4):
            backend.send_task(SWEEP)
        wait_for(lambda: len(mailbox.received) >= DRAIN // 4, timeout=30, interval=0.005)
        victim.kill_hard()
        with session_scope(sqlite_store) as session:
            in_flight = set(session.scalars(select(Row.message_id).where(Row.status == SENDING)))
        sweep_until_sent(backend, sqlite_store, DRAIN, timeout=40)
        with session_scope(sqlite_store) as session:
            # The victim's batch was held at the kill and taken over once its lease expired.
            taken_over = session.scalar(select(func.count()).where(Row.attempts > 1))
        survivor_alive = survivor.process is not None and survivor.process.poll() is None
        stop_before_the_server([survivor])

    copies = mailbox.copies()
    duplicates = {message_id for message_id, n in copies.items() if n > 1}
    print(
        f"\nSIGKILL mid-drain: {len(copies)} of {DRAIN} received, {len(duplicates)} duplicate(s); "
        f"{len(in_flight)} message(s) held by a claim at the kill, {taken_over} taken over after "
        "their lease expired"
    )
    assert set(copies) == expected  # none missing
    assert duplicates <= in_flight
    assert taken_over, "the killed worker held no message: it was not mid-drain"
    assert len(duplicates) <= 1  # the killed worker sends one message at a time
    assert max(copies.values()) <= 2
    assert survivor_alive
