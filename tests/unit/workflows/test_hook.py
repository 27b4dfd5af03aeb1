"""The workflow hook records a task's end: a success the link hands over is recorded once, an
early record that fails is retried at postrun, and only a list of names reaches the runtime.

The runtime is replaced by a recorder here: what is under test is when the hook records and
that a failed early record is retried at postrun (the runtime has its own integration tests).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
from celery import states

from personal_assistant.workers.workflows import runtime
from personal_assistant.workers.workflows.hook import WorkflowHook
from personal_assistant.workers.workflows.trigger_rules import Status

if TYPE_CHECKING:
    from personal_assistant.workers.app import WorkerApp


class StoredStates:
    """Stands in for the task's result backend: the states stored, in order."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, str]] = []

    def store_result(self, task_id: str, result: Any, state: str, request: Any = None) -> None:
        self.stored.append((task_id, state))


def workflow_task(celery_id: str = "celery-1", track_started: bool = False, **headers: Any) -> Any:
    request = SimpleNamespace(
        id=celery_id,
        hostname="w1@host",
        **{runtime.HEADER_WORKFLOW: "wf-1", runtime.HEADER_TASK: "a"},
        **headers,
    )
    return SimpleNamespace(request=request, track_started=track_started, backend=StoredStates())


class Recorded:
    """Stands in for runtime.record_task_event; can fail its first calls."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[tuple[str, str, str, Any]] = []
        self.failures = failures

    def __call__(self, app: Any, workflow_id: str, task_id: str, status: str, **kw: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis went away")
        self.calls.append((workflow_id, task_id, status, kw.get("result")))
        self.dependents = kw.get("dependents")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    recorder = Recorded()
    monkeypatch.setattr(runtime, "record_task_event", recorder)
    return recorder


def hook_running(task: Any) -> WorkflowHook:
    app = SimpleNamespace(current_worker_task=task)  # all the hook reads of its app here
    hook = WorkflowHook(cast("WorkerApp", app))
    hook.on_task_prerun(task=task, task_id=task.request.id, args=(), kwargs={})
    return hook


def test_a_workflow_task_stores_celerys_started_state_when_it_starts(
    recorded: Recorded,
) -> None:
    task = workflow_task()
    hook_running(task)
    assert task.backend.stored == [("celery-1", states.STARTED)]


def test_a_task_tracking_its_start_itself_is_not_stored_twice(recorded: Recorded) -> None:
    task = workflow_task(track_started=True)  # TASK_TRACK_STARTED: Celery stores it
    hook_running(task)
    assert task.backend.stored == []


def test_a_task_outside_workflows_stores_no_started_state(recorded: Recorded) -> None:
    backend = StoredStates()
    task = SimpleNamespace(
        request=SimpleNamespace(id="plain"), track_started=False, backend=backend
    )
    hook_running(task)
    assert backend.stored == []


def test_a_success_recorded_by_the_link_is_not_recorded_again_at_postrun(
    recorded: Recorded,
) -> None:
    task = workflow_task()
    hook = hook_running(task)
    hook.record_success({"count": 3})
    hook.on_task_postrun(task=task, task_id="celery-1", state=states.SUCCESS, retval={"count": 3})
    assert recorded.calls == [("wf-1", "a", Status.COMPLETED, {"count": 3})]


def test_an_early_record_that_fails_is_retried_at_postrun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flaky = Recorded(failures=1)
    monkeypatch.setattr(runtime, "record_task_event", flaky)
    task = workflow_task()
    hook = hook_running(task)
    hook.record_success(7)  # fails, logged, never raised into Celery's trace
    assert flaky.calls == []
    hook.on_task_postrun(task=task, task_id="celery-1", state=states.SUCCESS, retval=7)
    assert flaky.calls == [("wf-1", "a", Status.COMPLETED, 7)]


def test_a_failure_celery_reports_after_an_early_success_leaves_the_success_standing(
    recorded: Recorded,
) -> None:
    task = workflow_task()
    hook = hook_running(task)
    hook.record_success("done")
    # A result the backend cannot store turns into a FAILURE after the link ran.
    hook.on_task_postrun(task=task, task_id="celery-1", state=states.FAILURE, retval=TypeError())
    assert [call[2] for call in recorded.calls] == [Status.COMPLETED]


def test_a_task_outside_any_workflow_is_ignored_by_the_link(recorded: Recorded) -> None:
    hook = hook_running(SimpleNamespace(request=SimpleNamespace(id="plain")))
    hook.record_success(1)
    assert recorded.calls == []


@pytest.mark.parametrize(
    ("header", "passed_on"),
    [
        (["b", "c"], ["b", "c"]),
        ("b", None),  # not a list: ignored, the runtime reads the dependents itself
        (["b", 3], None),
        (None, None),
    ],
)
def test_the_dependents_a_message_names_reach_the_runtime_only_as_a_list_of_names(
    recorded: Recorded, header: Any, passed_on: list[str] | None
) -> None:
    task = workflow_task(**{runtime.HEADER_NEXT: header})
    hook_running(task).record_success(1)
    assert recorded.calls == [("wf-1", "a", Status.COMPLETED, 1)]
    assert recorded.dependents == passed_on
