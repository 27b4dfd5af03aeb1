"""The workflow allow-list: domain tasks by default, settings add more, never celery.* or
maintenance."""

from __future__ import annotations

import pytest

from personal_assistant.workers.workflows.policy import (
    DEFAULT_POLICY,
    WorkflowTaskPolicy,
)

TASKS = "personal_assistant.workers.tasks"
DOMAIN_TASKS = [
    f"{TASKS}.ai_tasks.probe",
    f"{TASKS}.email_tasks.probe",
    f"{TASKS}.file_tasks.cleanup_temp_files",
    f"{TASKS}.sync_tasks.sync_calendar_events",
]
CELERY_BUILTINS = [
    "celery.chunks",
    "celery.group",
    "celery.chain",
    "celery.chord",
    "celery.chord_unlock",
    "celery.map",
    "celery.starmap",
    "celery.accumulate",
    "celery.backend_cleanup",
]
MAINTENANCE_TASKS = [
    f"{TASKS}.maintenance_tasks.cleanup_old_logs",
    f"{TASKS}.maintenance_tasks.check_workflow_timeouts",
    f"{TASKS}.maintenance_tasks.sweep_workflow_timeouts",
    f"{TASKS}.maintenance_tasks.probe",
]
# Settings that try to let everything through.
EVERYTHING = WorkflowTaskPolicy.from_patterns(["*", *CELERY_BUILTINS, *MAINTENANCE_TASKS])


@pytest.mark.parametrize("name", DOMAIN_TASKS)
def test_the_domain_tasks_are_allowed_by_default(name: str) -> None:
    assert DEFAULT_POLICY.refusal(name) is None
    assert DEFAULT_POLICY.allows(name)


@pytest.mark.parametrize("name", CELERY_BUILTINS)
def test_celery_builtins_are_never_allowed_whatever_the_settings_say(name: str) -> None:
    for policy in (DEFAULT_POLICY, EVERYTHING):
        reason = policy.refusal(name)
        assert reason is not None
        assert "Celery's built-in tasks (celery.*) never run in a workflow" in reason


@pytest.mark.parametrize("name", MAINTENANCE_TASKS)
def test_maintenance_tasks_are_never_allowed_whatever_the_settings_say(name: str) -> None:
    for policy in (DEFAULT_POLICY, EVERYTHING):
        assert policy.refusal(name) == "maintenance tasks never run in a workflow"


@pytest.mark.parametrize(
    "name",
    [
        "tests.step",
        "myapp.tasks.report",
        f"{TASKS}.base_tasks.anything",
        f"{TASKS}.ai_tasks",  # the module itself, not a task in it
        f"{TASKS}.ai_tasks.",
        f"{TASKS}.ai_tasks.sub.module",  # deeper than the module's own functions
        f"{TASKS}.ai_tasks_extra.probe",  # shares the prefix, another module
        f"{TASKS}.AI_TASKS.probe",
        f" {TASKS}.ai_tasks.probe",
    ],
)
def test_any_other_task_is_refused_by_default_as_not_listed(name: str) -> None:
    reason = DEFAULT_POLICY.refusal(name)
    assert reason is not None
    assert "not on the allow-list" in reason
    assert "WORKFLOW_ALLOWED_TASKS" in reason


def test_settings_add_tasks_by_exact_name_or_fnmatch_pattern() -> None:
    policy = WorkflowTaskPolicy.from_patterns(["myapp.tasks.report", "tests.*"])
    assert policy.allows("myapp.tasks.report")
    assert policy.allows("tests.step")
    assert policy.allows("tests.noop")
    assert policy.allows(DOMAIN_TASKS[0])  # the defaults stay
    assert not policy.allows("myapp.tasks.report_all")
    assert not policy.allows("myapp.tasks.other")


def test_patterns_are_case_sensitive_as_task_names_are() -> None:
    policy = WorkflowTaskPolicy.from_patterns(["tests.*"])
    assert not policy.allows("Tests.step")


def test_blank_entries_in_the_settings_are_ignored_and_spaces_dropped() -> None:
    policy = WorkflowTaskPolicy.from_patterns(["", "  ", " tests.step "])
    assert policy.allowed_patterns == ("tests.step",)
    assert policy.allows("tests.step")
    assert not policy.allows("")


@pytest.mark.parametrize("name", [None, 5, ["tests.step"], b"tests.step"])
def test_a_name_that_is_not_a_string_is_refused(name: object) -> None:
    policy = WorkflowTaskPolicy.from_patterns(["*"])
    assert policy.refusal(name) == "a task name is a string"


def test_a_decision_is_the_same_when_asked_again() -> None:
    policy = WorkflowTaskPolicy.from_patterns(["tests.*"])
    first = [policy.refusal(n) for n in ("tests.step", "celery.chunks", "x.y")]
    assert [policy.refusal(n) for n in ("tests.step", "celery.chunks", "x.y")] == first
    assert policy == WorkflowTaskPolicy.from_patterns(["tests.*"])  # the memo is not state
