"""Each field of a workflow task, checked without trusting it: the allow-list, the size of the
arguments, the type of every field, and messages that stay short whatever the value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.workflows.definition import (
    WorkflowValidationError,
    parse_definition,
)
from personal_assistant.workers.workflows.policy import WorkflowTaskPolicy
from personal_assistant.workers.workflows.task_checks import MAX_WAIT_S
from tests.support.workflow_inputs import (
    AI_PROBE,
    CLEANUP_OLD_LOGS,
    celery_chunks,
    cleanup_everything,
)

FETCH = "personal_assistant.workers.tasks.sync_tasks.probe"
REGISTERED = frozenset({FETCH, AI_PROBE, CLEANUP_OLD_LOGS, "celery.chunks", "celery.group"})
ALLOW_EVERYTHING = WorkflowTaskPolicy.from_patterns(["*"])


def refused(raw: Any, **options: Any) -> WorkflowValidationError:
    with pytest.raises(WorkflowValidationError) as caught:
        parse_definition(raw, **options)
    return caught.value


def one_task(**spec: Any) -> dict[str, Any]:
    return {"tasks": {"a": {"task": FETCH, **spec}}}


# --- the allow-list -------------------------------------------------------------------------


def test_cleanup_old_logs_told_to_delete_everything_is_refused_naming_the_task_and_why() -> None:
    error = refused(cleanup_everything("wipe"), known_tasks=REGISTERED)
    assert error.problems == [
        f"wipe: task '{CLEANUP_OLD_LOGS}' may not run in a workflow: "
        "maintenance tasks never run in a workflow"
    ]


def test_celery_chunks_is_refused_even_when_the_settings_allow_every_task() -> None:
    error = refused(celery_chunks(), known_tasks=REGISTERED, policy=ALLOW_EVERYTHING)
    assert error.problems == [
        "chunks: task 'celery.chunks' may not run in a workflow: "
        "Celery's built-in tasks (celery.*) never run in a workflow"
    ]


def test_every_refused_task_is_reported_in_the_same_problem_list() -> None:
    raw = {
        "tasks": {
            "ok": {"task": FETCH},
            "wipe": {"task": CLEANUP_OLD_LOGS, "depends_on": ["ok"]},
            "group": {"task": "celery.group"},
            "mine": {"task": "myapp.tasks.report"},
            "bad_queue": {"task": FETCH, "options": {"queue": "nowhere"}},
        }
    }
    problems = refused(raw).problems
    assert len(problems) == 4
    assert problems[0].startswith(f"wipe: task '{CLEANUP_OLD_LOGS}' may not run in a workflow")
    assert problems[1].startswith("group: task 'celery.group' may not run in a workflow: Celery")
    assert problems[2] == (
        "mine: task 'myapp.tasks.report' may not run in a workflow: not on the allow-list "
        "(the ai, email, file and sync tasks, and WORKFLOW_ALLOWED_TASKS)"
    )
    assert problems[3].startswith("bad_queue: unknown queue 'nowhere'")


def test_a_task_the_settings_allow_is_accepted() -> None:
    policy = WorkflowTaskPolicy.from_patterns(["myapp.tasks.*"])
    definition = parse_definition({"tasks": {"a": {"task": "myapp.tasks.report"}}}, policy=policy)
    assert definition.tasks["a"].task == "myapp.tasks.report"


def test_an_unregistered_task_is_reported_once_as_unknown() -> None:
    error = refused({"tasks": {"a": {"task": "nope.missing"}}}, known_tasks=REGISTERED)
    assert error.problems == ["a: unknown Celery task 'nope.missing'"]


# --- did you mean ----------------------------------------------------------------------------

RUN_AI_TASK = "personal_assistant.workers.tasks.ai_tasks.run_ai_task"
SEND_EMAIL = "personal_assistant.workers.tasks.email_tasks.send_email"
KNOWN = frozenset({*REGISTERED, RUN_AI_TASK, SEND_EMAIL, "tests.step"})


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("personal_assistant.workers.tasks.ai_tasks.run_ai_tsk", RUN_AI_TASK),
        ("personal_assistant.workers.tasks.ai_task.probe", AI_PROBE),
        ("personal_assistant.workers.tasks.email_tasks.send_emial", SEND_EMAIL),
        ("ai_tasks.probe", AI_PROBE),
        ("run_ai_tsk", RUN_AI_TASK),
    ],
    ids=["typo", "module-typo", "swapped-letters", "short-form", "function-only-typo"],
)
def test_a_misspelt_task_name_is_told_the_allowed_task_it_most_likely_meant(
    written: str, meant: str
) -> None:
    error = refused({"tasks": {"a": {"task": written}}}, known_tasks=KNOWN)
    assert error.problems == [f"a: unknown Celery task '{written}'; did you mean '{meant}'?"]


def test_a_suggestion_is_never_a_task_the_workflow_policy_refuses() -> None:
    written = CLEANUP_OLD_LOGS[:-1] + "z"  # a maintenance task: registered, never allowed
    error = refused({"tasks": {"a": {"task": written}}}, known_tasks=KNOWN)
    assert error.problems == [f"a: unknown Celery task '{written}'"]


def test_a_task_the_settings_allow_is_suggested_too() -> None:
    policy = WorkflowTaskPolicy.from_patterns(["tests.*"])
    error = refused({"tasks": {"a": {"task": "tests.stepp"}}}, known_tasks=KNOWN, policy=policy)
    assert error.problems == ["a: unknown Celery task 'tests.stepp'; did you mean 'tests.step'?"]


def test_misspellings_are_listed_with_the_other_problems_one_line_each() -> None:
    raw = {
        "tasks": {
            "a": {"task": "ai_tasks.probe"},
            "b": {"task": RUN_AI_TASK, "depends_on": ["missing"]},
        }
    }
    error = refused(raw, known_tasks=KNOWN)
    assert error.problems == [
        f"a: unknown Celery task 'ai_tasks.probe'; did you mean '{AI_PROBE}'?",
        "b: depends on unknown task 'missing'",
    ]


# --- the size of the arguments --------------------------------------------------------------


def test_arguments_over_the_size_limit_are_refused_naming_the_limit() -> None:
    # '["x…x"]' and '{}': the string's length plus 6 bytes of JSON.
    error = refused(one_task(args=["x" * (c.WORKFLOW_MAX_ARGS_BYTES - 5)]))
    assert error.problems == [
        f"a: 'args' and 'kwargs' take {c.WORKFLOW_MAX_ARGS_BYTES + 1:,} bytes as JSON; the "
        f"limit is {c.WORKFLOW_MAX_ARGS_BYTES:,} bytes (pass references to data, not the data)"
    ]


def test_arguments_of_exactly_the_size_limit_are_accepted() -> None:
    args = ["x" * (c.WORKFLOW_MAX_ARGS_BYTES - 6)]
    assert parse_definition(one_task(args=args)).tasks["a"].args == args


def test_args_and_kwargs_count_together_against_the_limit() -> None:
    half = "x" * (c.WORKFLOW_MAX_ARGS_BYTES // 2)
    error = refused(one_task(args=[half], kwargs={"k": half}))
    assert "'args' and 'kwargs' take" in error.problems[0]


def test_arguments_are_measured_in_utf8_bytes_not_characters() -> None:
    # Two bytes a character: half the limit in characters is over it in bytes.
    error = refused(one_task(args=["é" * (c.WORKFLOW_MAX_ARGS_BYTES // 2)]))
    assert "'args' and 'kwargs' take" in error.problems[0]


# --- wrong types in every field --------------------------------------------------------------

DURATION = f"a positive number of seconds, at most {MAX_WAIT_S:,}"
HUGE = 10**5000


def wrong(
    make: Callable[[Any], dict[str, Any]], values: tuple[Any, ...], expected: str
) -> list[tuple[dict[str, Any], str]]:
    """One case per value: the definition ``make`` builds around it, and the problem it gives."""
    return [(make(value), expected) for value in values]


NOT_DURATIONS: tuple[Any, ...] = (
    "10",
    [],
    {},
    -1,
    0,
    True,
    float("inf"),
    float("nan"),
    HUGE,
    1e300,
)
WRONG_TYPES = [
    *wrong(lambda v: {"name": v, **one_task()}, (5, None, [], ""), "'name' must be a string"),
    *wrong(
        lambda v: {"deadline": v, **one_task()},
        (*NOT_DURATIONS, MAX_WAIT_S + 1),
        f"'deadline' must be {DURATION}",
    ),
    *wrong(lambda v: {"tasks": v}, (5, "a", None, True), "'tasks' must be a mapping"),
    *wrong(lambda v: {"tasks": {"a": v}}, (5, [], None, "x"), "a: must be a mapping"),
    *wrong(lambda v: one_task(task=v), (5, None, [], {}), "'task' (a Celery task name) is"),
    *wrong(lambda v: one_task(args=v), ("x", {}, 5, None), "a: 'args' must be a list"),
    *wrong(lambda v: one_task(kwargs=v), ([], "x", 5, None), "a: 'kwargs' must be a mapping"),
    *wrong(lambda v: one_task(depends_on=v), (5, {}, [1], [None]), "'depends_on' must be a"),
    *wrong(lambda v: one_task(condition=v), (5, [], True, {}), "a: 'condition' must be a str"),
    *wrong(lambda v: one_task(trigger_rule=v), (5, None, []), "a: 'trigger_rule' must be a"),
    *wrong(
        lambda v: one_task(timeout=v),
        (*NOT_DURATIONS, MAX_WAIT_S + 0.5),
        f"a: 'timeout' must be {DURATION}",
    ),
    *wrong(lambda v: one_task(options=v), ("x", [], 5), "a: 'options' must be a mapping"),
    *wrong(lambda v: one_task(options={"queue": v}), (5, [], None, HUGE), "a: unknown queue"),
    *wrong(
        lambda v: one_task(options={"priority": v}),
        ("5", 5.0, [], True, HUGE),
        "a: priority must be an integer",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), WRONG_TYPES)
def test_a_wrong_type_in_any_field_is_a_validation_error(raw: Any, expected: str) -> None:
    error = refused(raw)
    assert any(expected in problem for problem in error.problems), error.problems


def test_durations_of_exactly_the_maximum_are_accepted() -> None:
    definition = parse_definition({"deadline": MAX_WAIT_S, **one_task(timeout=MAX_WAIT_S)})
    assert definition.deadline == MAX_WAIT_S
    assert definition.tasks["a"].timeout == MAX_WAIT_S
    definition.build_scheduler()  # a timedelta holds them


# --- messages stay short --------------------------------------------------------------------

MEGABYTE = "x" * 1_000_000


@pytest.mark.parametrize(
    "raw",
    [
        one_task(trigger_rule=MEGABYTE),
        one_task(options={"queue": MEGABYTE}),
        one_task(options={MEGABYTE: 1}),
        one_task(task=MEGABYTE),
        one_task(**{MEGABYTE: 1}),
        one_task(condition=MEGABYTE),
        one_task(depends_on=[MEGABYTE]),
        {"tasks": {MEGABYTE: {"task": FETCH}}},
        {"tasks": {"a": {"task": FETCH, "depends_on": [MEGABYTE[:-1]]}, MEGABYTE[:-1]: 5}},
        {"tasks": [{"id": MEGABYTE, "task": FETCH}, {"id": MEGABYTE, "task": FETCH}]},
        {"name": MEGABYTE, **one_task()},
        {MEGABYTE: 1, **one_task()},
    ],
    ids=[
        "trigger-rule",
        "queue",
        "option-key",
        "task-name",
        "task-field",
        "condition",
        "dependency",
        "task-id",
        "task-id-in-a-cycle-check",
        "duplicate-ids",
        "name",
        "top-level-key",
    ],
)
def test_a_megabyte_value_in_any_field_gives_a_short_message(raw: Any) -> None:
    error = refused(raw, known_tasks=REGISTERED)
    assert len(str(error)) < 2_000
    assert all(len(problem) <= 300 for problem in error.problems)


def test_the_issues_one_megabyte_trigger_rule_is_refused_in_one_short_line() -> None:
    error = refused(one_task(trigger_rule=MEGABYTE))
    assert len(error.problems) == 1
    assert error.problems[0].startswith("a: unknown trigger rule 'xxxxx")
    assert "\n" not in str(error)
    assert len(str(error)) < 400


# --- queues -----------------------------------------------------------------------------------


def test_a_domain_task_sent_to_another_domains_queue_is_refused() -> None:
    error = refused(one_task(options={"queue": c.MAINTENANCE_QUEUE}), known_tasks=REGISTERED)

    assert error.problems == [f"a: {FETCH} runs on {c.SYNC_QUEUE}, not on '{c.MAINTENANCE_QUEUE}'"]


def test_a_domain_task_on_its_own_queue_is_accepted() -> None:
    definition = parse_definition(
        one_task(options={"queue": c.SYNC_QUEUE, "priority": 9}), known_tasks=REGISTERED
    )

    assert definition.tasks["a"].options == {"queue": c.SYNC_QUEUE, "priority": 9}
