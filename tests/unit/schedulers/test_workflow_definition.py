"""Workflow definitions: validated whole, every problem reported at once, stored and rebuilt."""

from __future__ import annotations

import itertools
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from personal_assistant.workers.schedulers.workflow_definition import (
    MAX_WORKFLOW_TASKS,
    WorkflowDefinition,
    WorkflowTask,
    WorkflowValidationError,
    load_definition_file,
    parse_definition,
)

FETCH = "personal_assistant.workers.tasks.sync_tasks.probe"
SUMMARIZE = "personal_assistant.workers.tasks.ai_tasks.probe"
KNOWN = frozenset({FETCH, SUMMARIZE})


def valid_mapping() -> dict[str, Any]:
    """A definition using every field, in the mapping form."""
    return {
        "name": "nightly-digest",
        "deadline": 3600,
        "tasks": {
            "fetch": {"task": FETCH, "args": [1, "x"], "kwargs": {"since": "yesterday"}},
            "summarize": {
                "task": SUMMARIZE,
                "depends_on": ["fetch"],
                "condition": "fetch.result['count'] > 0",
                "trigger_rule": "all_success",
                "timeout": 600,
                "options": {"queue": "ai_tasks", "priority": 9},
            },
        },
    }


def problems_of(raw: Any, known_tasks: frozenset[str] | None = KNOWN) -> list[str]:
    """The problems ``parse_definition`` reports for ``raw`` (it must refuse it)."""
    with pytest.raises(WorkflowValidationError) as caught:
        parse_definition(raw, known_tasks=known_tasks)
    assert str(caught.value).startswith("invalid workflow:")
    for problem in caught.value.problems:
        assert problem in str(caught.value)
    return caught.value.problems


def one_task(**spec: Any) -> dict[str, Any]:
    """A definition of one task ``a`` running FETCH, with ``spec`` on top."""
    return {"tasks": {"a": {"task": FETCH, **spec}}}


def cycle_in(message: str) -> list[str]:
    """The path of the cycle named in ``message``."""
    found = re.search(r"dependency cycle: (\S+(?: -> \S+)+)", message)
    assert found is not None, message
    return found.group(1).split(" -> ")


# --- valid definitions ----------------------------------------------------------------------


def test_a_valid_mapping_form_parses_with_every_field() -> None:
    definition = parse_definition(valid_mapping(), known_tasks=KNOWN)

    assert definition.name == "nightly-digest"
    assert definition.deadline == 3600.0
    assert list(definition.tasks) == ["fetch", "summarize"]
    assert definition.tasks["fetch"] == WorkflowTask(
        id="fetch", task=FETCH, args=[1, "x"], kwargs={"since": "yesterday"}
    )
    assert definition.tasks["summarize"] == WorkflowTask(
        id="summarize",
        task=SUMMARIZE,
        depends_on=["fetch"],
        condition="fetch.result['count'] > 0",
        trigger_rule="all_success",
        timeout=600.0,
        options={"queue": "ai_tasks", "priority": 9},
    )


def test_the_list_form_parses_to_the_same_definition() -> None:
    mapping = valid_mapping()
    listed = {**mapping, "tasks": [{"id": tid, **spec} for tid, spec in mapping["tasks"].items()]}
    assert parse_definition(listed, known_tasks=KNOWN) == parse_definition(
        mapping, known_tasks=KNOWN
    )


def test_without_known_tasks_any_celery_task_name_is_accepted() -> None:
    definition = parse_definition({"tasks": {"a": {"task": "anything.at.all"}}})
    assert definition.tasks["a"].task == "anything.at.all"
    assert definition.name == "workflow"
    assert definition.deadline is None


def test_depends_on_given_as_one_string_is_one_dependency() -> None:
    raw = {"tasks": {"a": {"task": FETCH}, "b": {"task": FETCH, "depends_on": "a"}}}
    assert parse_definition(raw, known_tasks=KNOWN).tasks["b"].depends_on == ["a"]


def test_a_workflow_of_exactly_the_maximum_size_is_accepted() -> None:
    tasks = {f"t{i}": {"task": FETCH} for i in range(MAX_WORKFLOW_TASKS)}
    definition = parse_definition({"tasks": tasks}, known_tasks=KNOWN)
    assert len(definition.tasks) == MAX_WORKFLOW_TASKS


# --- every problem, one at a time -----------------------------------------------------------


SINGLE_PROBLEMS = [
    pytest.param(one_task(task="pkg.nope"), "a: unknown Celery task 'pkg.nope'", id="task-name"),
    pytest.param(one_task(task=""), "'task' (a Celery task name) is required", id="no-task"),
    pytest.param(
        one_task(depends_on=["ghost"]), "a: depends on unknown task 'ghost'", id="dependency"
    ),
    pytest.param(one_task(depends_on=[1]), "'depends_on' must be a list", id="depends-on-int"),
    pytest.param(
        one_task(depends_on={"x": 1}), "'depends_on' must be a list", id="depends-on-mapping"
    ),
    pytest.param(
        one_task(condition="__import__('os')"),
        "a: bad condition: calls are not allowed",
        id="condition-call",
    ),
    pytest.param(
        {"tasks": {"a": {"task": FETCH}, "b": {"task": FETCH, "condition": "c.status == 'x'"}}},
        "b: bad condition: unknown task",
        id="condition-names-a-non-dependency",
    ),
    pytest.param(
        one_task(condition="a.status =="), "bad condition: cannot parse", id="condition-syntax"
    ),
    pytest.param(
        one_task(trigger_rule="sometimes"),
        "a: unknown trigger rule 'sometimes'; known rules: all_success",
        id="trigger-rule",
    ),
    pytest.param(
        one_task(options={"colour": "red"}),
        "a: unknown option 'colour' (allowed: queue, priority)",
        id="option-key",
    ),
    pytest.param(one_task(options=["ai_tasks"]), "'options' must be a mapping", id="options"),
    pytest.param(
        one_task(options={"queue": "nowhere"}), "a: unknown queue 'nowhere'; known:", id="queue"
    ),
    pytest.param(
        one_task(options={"priority": 10}), "priority must be an integer from 0 to 9", id="pri-10"
    ),
    pytest.param(
        one_task(options={"priority": -1}), "priority must be an integer from 0 to 9", id="pri-neg"
    ),
    pytest.param(
        one_task(options={"priority": True}), "priority must be an integer", id="priority-bool"
    ),
    pytest.param(
        one_task(options={"priority": 5.0}), "priority must be an integer", id="priority-float"
    ),
    pytest.param(one_task(timeout=0), "'timeout' must be a positive number", id="timeout-zero"),
    pytest.param(one_task(timeout=-5), "'timeout' must be a positive number", id="timeout-neg"),
    pytest.param(one_task(timeout=True), "'timeout' must be a positive number", id="timeout-bool"),
    pytest.param(one_task(timeout="10"), "'timeout' must be a positive number", id="timeout-str"),
    pytest.param(one_task(args="x"), "a: 'args' must be a list", id="args"),
    pytest.param(one_task(kwargs=["x"]), "'kwargs' must be a mapping", id="kwargs"),
    pytest.param(one_task(kwargs={1: "x"}), "with string keys", id="kwargs-keys"),
    pytest.param(one_task(retries=3), "a: unknown field 'retries'", id="task-field"),
    pytest.param({"tasks": {"a": FETCH}}, "a: must be a mapping", id="task-not-mapping"),
    pytest.param(
        {"tasks": {"bad id!": {"task": FETCH}}}, "task ids are 1-100 letters", id="id-chars"
    ),
    pytest.param({"tasks": {"-a": {"task": FETCH}}}, "task ids are 1-100", id="id-leading-dash"),
    pytest.param({"tasks": {"x" * 101: {"task": FETCH}}}, "task ids are 1-100", id="id-101"),
    pytest.param({"tasks": [{"task": FETCH}]}, "tasks[0]: each task needs an 'id'", id="no-id"),
    pytest.param(
        {"tasks": [{"id": "a", "task": FETCH}, {"id": "a", "task": FETCH}]},
        "duplicate task id 'a'",
        id="duplicate-id",
    ),
    pytest.param({"tasks": {}}, "a workflow needs at least one task", id="no-tasks"),
    pytest.param({"tasks": []}, "a workflow needs at least one task", id="empty-list"),
    pytest.param({"name": "x"}, "'tasks' must be a mapping", id="tasks-missing"),
    pytest.param({"tasks": "a,b"}, "'tasks' must be a mapping", id="tasks-string"),
    pytest.param({**one_task(), "owner": "me"}, "unknown top-level field 'owner'", id="top-field"),
    pytest.param({**one_task(), "name": ""}, "'name' must be a string of 1-200", id="name-empty"),
    pytest.param({**one_task(), "name": "n" * 201}, "'name' must be a string", id="name-long"),
    pytest.param({**one_task(), "deadline": 0}, "'deadline' must be a positive", id="deadline-0"),
    pytest.param({**one_task(), "deadline": True}, "'deadline' must be", id="deadline-bool"),
    pytest.param(one_task(depends_on=["a"]), "dependency cycle: a -> a", id="self-dependency"),
    pytest.param(["not", "a", "mapping"], "a workflow definition must be a mapping", id="list"),
]


@pytest.mark.parametrize(("raw", "expected"), SINGLE_PROBLEMS)
def test_a_bad_definition_is_refused_naming_the_problem(raw: Any, expected: str) -> None:
    problems = problems_of(raw)
    assert any(expected in problem for problem in problems), problems


def test_a_cycle_is_reported_with_its_path() -> None:
    raw: dict[str, dict[str, dict[str, Any]]] = {
        "tasks": {
            "a": {"task": FETCH, "depends_on": ["c"]},
            "b": {"task": FETCH, "depends_on": ["a"]},
            "c": {"task": FETCH, "depends_on": ["b"]},
            "d": {"task": FETCH},
        }
    }
    problems = problems_of(raw)
    assert len(problems) == 1
    path = cycle_in(problems[0])
    edges = {(up, tid) for tid, spec in raw["tasks"].items() for up in spec.get("depends_on", [])}
    assert path[0] == path[-1]
    assert sorted(path[:-1]) == ["a", "b", "c"]
    assert all(pair in edges for pair in itertools.pairwise(path))


def test_more_than_the_maximum_number_of_tasks_is_refused() -> None:
    tasks = {f"t{i}": {"task": FETCH} for i in range(MAX_WORKFLOW_TASKS + 1)}
    problems = problems_of({"tasks": tasks})
    assert problems == [f"{MAX_WORKFLOW_TASKS + 1} tasks; at most {MAX_WORKFLOW_TASKS}"]


# --- every problem at once ------------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    raw = {
        "name": "broken",
        "owner": "me",
        "tasks": [
            {"id": "a", "task": "pkg.nope"},
            {"id": "b", "task": FETCH, "depends_on": ["ghost"]},
            {"id": "c", "task": FETCH},
            {"id": "c", "task": FETCH},
            {"id": "d", "task": FETCH, "depends_on": ["c"], "condition": "c.__class__"},
            {"id": "e", "task": FETCH, "trigger_rule": "sometimes"},
            {"id": "f", "task": FETCH, "options": {"colour": "red"}},
            {"id": "g", "task": FETCH, "options": {"queue": "nowhere"}},
            {"id": "h", "task": FETCH, "options": {"priority": 10}},
            {"id": "i", "task": FETCH, "options": {"priority": True}},
            {"id": "j", "task": FETCH, "timeout": 0},
            {"id": "k", "task": FETCH, "args": "x"},
            {"id": "l", "task": FETCH, "kwargs": ["x"]},
            {"id": "m", "task": FETCH, "retries": 3},
            {"id": "bad id!", "task": FETCH},
        ],
    }
    problems = problems_of(raw)
    expected = [
        "unknown top-level field 'owner'",
        "a: unknown Celery task 'pkg.nope'",
        "b: depends on unknown task 'ghost'",
        "duplicate task id 'c'",
        "d: bad condition: dunder attributes are not allowed",
        "e: unknown trigger rule 'sometimes'",
        "f: unknown option 'colour'",
        "g: unknown queue 'nowhere'",
        "h: priority must be an integer",
        "i: priority must be an integer",
        "j: 'timeout' must be a positive number",
        "k: 'args' must be a list",
        "l: 'kwargs' must be a mapping",
        "m: unknown field 'retries'",
        "'bad id!': task ids are 1-100",
    ]
    missing = [e for e in expected if not any(e in problem for problem in problems)]
    assert missing == []
    assert len(problems) == len(expected)


def test_a_cycle_is_reported_beside_other_problems() -> None:
    raw = {
        "tasks": {
            "a": {"task": FETCH, "depends_on": ["b"]},
            "b": {"task": FETCH, "depends_on": ["a"]},
            "c": {"task": FETCH, "options": {"queue": "nowhere"}},
        }
    }
    problems = problems_of(raw)
    assert any("unknown queue" in problem for problem in problems)
    assert any("dependency cycle" in problem for problem in problems)


def test_an_unknown_dependency_is_reported_beside_the_same_tasks_other_problems() -> None:
    problems = problems_of(one_task(depends_on=["ghost"], options={"queue": "nowhere"}))
    assert any("unknown queue" in problem for problem in problems)
    assert any("unknown task 'ghost'" in problem for problem in problems)


def test_a_task_id_ending_in_a_newline_is_refused() -> None:
    problems = problems_of({"tasks": {"a\n": {"task": FETCH}}})
    assert any("task ids are 1-100" in problem for problem in problems)


@pytest.mark.parametrize(
    "raw",
    [
        {"tasks": {"a": {"task": FETCH}}, 1: "x", "owner": "me"},
        {"tasks": {"a": {"task": FETCH, 1: "x", "retries": 3}}},
        {"tasks": {"a": {"task": FETCH, "options": {1: "x", "colour": "red"}}}},
    ],
    ids=["top-level", "task", "options"],
)
def test_a_non_string_key_is_reported_as_unknown(raw: Any) -> None:
    problems = problems_of(raw)
    assert any("1" in problem and "unknown" in problem for problem in problems)


def test_a_null_task_id_in_the_list_form_is_refused() -> None:
    problems_of({"tasks": [{"id": None, "task": FETCH}]})


# --- files ----------------------------------------------------------------------------------


YAML_DEFINITION = f"""\
name: nightly-digest
deadline: 3600
tasks:
  fetch:
    task: {FETCH}
  summarize:
    task: {SUMMARIZE}
    depends_on: [fetch]
    condition: "fetch.result['count'] > 0"
    timeout: 600
    options: {{queue: ai_tasks, priority: 9}}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def file_problems(path: Path) -> list[str]:
    with pytest.raises(WorkflowValidationError) as caught:
        load_definition_file(path)
    return caught.value.problems


def test_a_yaml_file_loads_into_a_valid_definition(tmp_path: Path) -> None:
    raw = load_definition_file(write(tmp_path, "wf.yaml", YAML_DEFINITION))
    expected = valid_mapping()
    expected["tasks"]["fetch"] = {"task": FETCH}
    expected["tasks"]["summarize"].pop("trigger_rule")
    assert raw == expected
    assert parse_definition(raw, known_tasks=KNOWN).tasks["summarize"].timeout == 600.0


def test_a_json_file_loads_by_its_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "wf.json", json.dumps({"tasks": {"a": {"task": FETCH}}}))
    assert load_definition_file(path) == {"tasks": {"a": {"task": FETCH}}}


def test_a_duplicate_yaml_key_is_reported_with_its_line(tmp_path: Path) -> None:
    text = f"tasks:\n  fetch:\n    task: {FETCH}\n  fetch:\n    task: {SUMMARIZE}\n"
    problems = file_problems(write(tmp_path, "wf.yaml", text))
    assert len(problems) == 1
    assert "duplicate key 'fetch' (line 4)" in problems[0]
    assert "wf.yaml" in problems[0]


def test_a_yaml_syntax_error_is_reported_with_its_place(tmp_path: Path) -> None:
    problems = file_problems(write(tmp_path, "wf.yml", "name: x\ntasks: [unclosed\n"))
    assert len(problems) == 1
    assert "wf.yml" in problems[0]
    assert "line" in problems[0]


def test_a_json_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    problems = file_problems(write(tmp_path, "wf.json", '{\n  "tasks": {,}\n}\n'))
    assert len(problems) == 1
    assert "wf.json: line 2:" in problems[0]


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    problems = file_problems(tmp_path / "absent.yaml")
    assert len(problems) == 1
    assert "cannot read" in problems[0]
    assert "absent.yaml" in problems[0]
    assert "No such file" in problems[0]


@pytest.mark.parametrize(
    ("name", "text"),
    [("wf.yaml", "- a\n- b\n"), ("wf.json", "[1, 2]"), ("wf.yaml", ""), ("wf.yaml", "just text")],
    ids=["yaml-list", "json-list", "empty", "scalar"],
)
def test_a_top_level_that_is_not_a_mapping_is_refused(tmp_path: Path, name: str, text: str) -> None:
    problems = file_problems(write(tmp_path, name, text))
    assert problems == [f"{tmp_path / name}: the top level must be a mapping"]


def test_a_yaml_python_tag_is_refused_not_executed(tmp_path: Path) -> None:
    text = "tasks: !!python/object/apply:os.system ['true']\n"
    problems = file_problems(write(tmp_path, "wf.yaml", text))
    assert len(problems) == 1
    assert "python/object/apply" in problems[0]


# --- storage and scheduling -----------------------------------------------------------------


def test_to_json_and_from_json_round_trip() -> None:
    definition = parse_definition(valid_mapping(), known_tasks=KNOWN)
    stored = definition.to_json()
    assert WorkflowDefinition.from_json(stored) == definition
    assert WorkflowDefinition.from_json(stored.encode()) == definition


def test_a_definition_without_a_deadline_round_trips() -> None:
    definition = parse_definition(one_task(), known_tasks=KNOWN)
    assert WorkflowDefinition.from_json(definition.to_json()) == definition


def test_build_scheduler_orders_tasks_listed_downstream_first() -> None:
    raw = {
        "tasks": {
            "publish": {"task": FETCH, "depends_on": ["summarize", "translate"]},
            "translate": {"task": FETCH, "depends_on": ["fetch"]},
            "summarize": {"task": SUMMARIZE, "depends_on": ["fetch"]},
            "fetch": {"task": FETCH},
        }
    }
    scheduler = parse_definition(raw, known_tasks=KNOWN).build_scheduler()
    order = scheduler.get_execution_order()
    assert sorted(order) == ["fetch", "publish", "summarize", "translate"]
    assert order[0] == "fetch"
    assert order[-1] == "publish"
    assert scheduler.start() == ["fetch"]


def test_build_scheduler_carries_rules_conditions_timeouts_and_the_deadline() -> None:
    raw = valid_mapping()
    raw["tasks"]["summarize"]["trigger_rule"] = "all_done"
    scheduler = parse_definition(raw, known_tasks=KNOWN).build_scheduler()

    summarize = scheduler.dependencies["summarize"]
    assert summarize.depends_on == ["fetch"]
    assert summarize.trigger_rule == "all_done"
    assert summarize.condition == "fetch.result['count'] > 0"
    assert summarize.timeout == timedelta(seconds=600)
    assert scheduler.deadline == timedelta(seconds=3600)
    assert scheduler.start() == ["fetch"]
    assert scheduler.record_status("fetch", "completed", {"count": 2}) == ["summarize"]
