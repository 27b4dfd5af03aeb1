"""A real worker's log never shows a password, not even in the traceback of a failed task."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.celery_app import WorkerApp
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

SECRET = "log-s3cret/with-a-slash"  # noqa: S105 - a made-up password to look for


def test_the_traceback_of_a_failed_task_is_masked_in_the_worker_log(
    producer_app: WorkerApp, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker([c.AI_QUEUE])
    # tests.step raises PermanentError(f"{name} failed"): the name is the exception's text.
    result = producer_app.send_task(
        "tests.step",
        args=[f"redis://:{SECRET}@cache.internal:6379/0"],
        kwargs={"fail": True},
        queue=c.AI_QUEUE,
    )
    with pytest.raises(Exception, match="failed"):
        result.get(timeout=60)

    wait_for(lambda: "Traceback" in worker.log(), timeout=10)
    log = worker.log()
    assert "PermanentError: redis://:****@cache.internal:6379/0 failed" in log
    assert SECRET not in log
    assert "log-s3cret" not in log
