"""Workflow definitions: validated whole, every problem reported at once, stored and rebuilt."""

from __future__ import annotations

import itertools
import json
import math
import re
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personal_assistant.workers import constants as c
from personal_assistant.workers.workflows.definition import (
    MAX_WORKFLOW_TASKS,
    TASK_FIELDS,
    WorkflowDefinition,
    WorkflowTask,
    WorkflowValidationError,
    load_definition_file,
    parse_and_build,
    parse_definition,
)
from personal_assistant.workers.workflows.policy import WorkflowTaskPolicy
from tests.support.workflow_inputs import ALIAS_BOMB, alias_bomb_workflow, shared_list_bomb

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


def test_without_known_tasks_any_allowed_task_name_is_accepted() -> None:
    name = "personal_assistant.workers.tasks.email_tasks.not_registered_here"
    definition = parse_definition({"tasks": {"a": {"task": name}}})
    assert definition.tasks["a"].task == name
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
    assert problems[0] == f"{tmp_path / 'wf.yaml'}: line 4: duplicate key 'fetch'"


def test_a_yaml_syntax_error_is_reported_with_its_place(tmp_path: Path) -> None:
    problems = file_problems(write(tmp_path, "wf.yml", "name: x\ntasks: [unclosed\n"))
    assert len(problems) == 1
    assert "wf.yml" in problems[0]
    assert "line" in problems[0]


def test_a_json_syntax_error_is_reported_with_its_line_and_column(tmp_path: Path) -> None:
    problems = file_problems(write(tmp_path, "wf.json", '{\n  "tasks": {,}\n}\n'))
    assert len(problems) == 1
    assert "wf.json: line 2, column 13: Expecting property name" in problems[0]


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


# --- hostile files: every failure one validation error naming the file and the line -------


def test_a_file_of_nested_aliases_is_refused_before_anything_expands(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.yaml", alias_bomb_workflow())
    problems = file_problems(path)
    assert problems == [f"{path}: line 6: aliases (*name) are not allowed: write the value out"]


def test_the_alias_bomb_alone_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.yaml", ALIAS_BOMB)
    assert file_problems(path) == [
        f"{path}: line 2: aliases (*name) are not allowed: write the value out"
    ]


def test_a_device_is_refused_without_being_read() -> None:
    assert file_problems(Path("/dev/zero")) == ["/dev/zero: not a regular file"]


def test_a_file_over_the_size_limit_is_refused_naming_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# padding\n" * (c.WORKFLOW_MAX_DEFINITION_BYTES // 10 + 1))
    assert file_problems(path) == [f"{path}: larger than the limit of 1,048,576 bytes"]


def test_a_file_of_exactly_the_size_limit_is_read(tmp_path: Path) -> None:
    text = f"tasks:\n  a:\n    task: {FETCH}\n"
    padding = c.WORKFLOW_MAX_DEFINITION_BYTES - len(text) - 2
    path = write(tmp_path, "full.yaml", text + "#" + "x" * padding + "\n")
    assert path.stat().st_size == c.WORKFLOW_MAX_DEFINITION_BYTES
    assert load_definition_file(path) == {"tasks": {"a": {"task": FETCH}}}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("deadline: .inf\n", "line 1: '.inf' is not a finite number"),
        ("name: x\ndeadline: 1.0e+400\n", "line 2: '1.0e+400' is not a finite number"),
        ("deadline: " + "9" * 5000 + "\n", "line 1: the number '99999"),
        ("tasks:\n  ? [a, b]\n  : 1\n", "line 2: a key must be a single value"),
        ("name: caf\xe9\n", "line 1: not UTF-8 (byte 0xe9)"),
        ("tasks: " + "[" * 100_000 + "]" * 100_000 + "\n", "line 1, column "),
        ("name: x\ntasks: {a: {task: x}\n", "line 3, column 1: did not find expected ','"),
        ("name: x\x07\n", "line 1, column 8: character #x0007: "),
        ("name: x\ntasks:\n  ab: \x01\n", "line 3, column 7: character #x0001: "),
        ("tasks: " + "[" * 40 + "]" * 40 + "\n", "line 1: nested deeper than 32 levels"),
        ("name: &n x\ntasks: *n\n", "line 2: aliases (*name) are not allowed"),
        ("tasks: !!set {a, b}\n", "line 1: tag 'tag:yaml.org,2002:set' is not allowed"),
    ],
    ids=[
        "inf",
        "1e400",
        "5000-digits",
        "unhashable-key",
        "not-utf8",
        "100k-deep",
        "syntax",
        "control-character",
        "control-character-further-down",
        "40-deep",
        "alias",
        "set",
    ],
)
def test_a_hostile_yaml_file_is_one_validation_error_naming_the_file_and_line(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(text.encode("latin-1"))
    problems = file_problems(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: {reason}")
    assert "\n" not in problems[0]
    assert "<unicode string>" not in problems[0]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"deadline": Infinity}', "Infinity is not a finite number"),
        ('{"deadline": 1e400}', "'1e400' is not a finite number"),
        ('{"deadline": ' + "9" * 5000 + "}", "has more than 18 digits"),
        ('{"tasks": {}, "tasks": {}}', "duplicate key 'tasks'"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
    ],
    ids=["infinity", "1e400", "5000-digits", "duplicate-key", "deep"],
)
def test_a_hostile_json_file_is_one_validation_error_naming_the_file(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = write(tmp_path, "wf.json", text)
    problems = file_problems(path)
    assert len(problems) == 1
    assert problems[0].startswith(str(path))
    assert reason in problems[0]


def test_a_validation_error_of_one_problem_is_one_line() -> None:
    error = WorkflowValidationError(["/dev/zero: not a regular file"])
    assert str(error) == "invalid workflow: /dev/zero: not a regular file"


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


def test_a_definition_is_stored_compactly_without_the_defaults() -> None:
    definition = parse_definition(one_task(), known_tasks=KNOWN)
    stored = json.loads(definition.to_json())
    assert stored == {"name": "workflow", "deadline": None, "tasks": [{"id": "a", "task": FETCH}]}
    assert " " not in definition.to_json()


def test_a_definition_stored_by_the_previous_version_is_still_read() -> None:
    definition = parse_definition(valid_mapping(), known_tasks=KNOWN)
    from dataclasses import asdict  # noqa: PLC0415 - the old format, built as it was

    old = json.dumps(
        {
            "name": definition.name,
            "deadline": definition.deadline,
            "tasks": [asdict(t) for t in definition.tasks.values()],
        }
    )
    assert WorkflowDefinition.from_json(old) == definition


# --- the size of a definition given as Python data ------------------------------------------


def compact_size(raw: Any) -> int:
    return len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode())


def padded_definition(total: int) -> dict[str, Any]:
    """A valid definition whose compact JSON is exactly ``total`` bytes (tasks of big args)."""
    chunk = c.WORKFLOW_MAX_ARGS_BYTES - 100
    tasks = {f"t{i}": {"task": FETCH, "args": ["x" * chunk]} for i in range(total // chunk + 1)}
    raw: dict[str, Any] = {"tasks": tasks}
    last = tasks[f"t{len(tasks) - 1}"]
    last["args"] = [""]
    last["args"] = ["x" * (total - compact_size(raw))]
    assert compact_size(raw) == total
    return raw


def test_a_definition_over_the_size_limit_is_refused_naming_the_limit() -> None:
    raw = padded_definition(c.WORKFLOW_MAX_DEFINITION_BYTES + 1)
    problems = problems_of(raw)
    assert problems == ["the definition is larger than the limit of 1,048,576 bytes (as JSON)"]


def test_a_definition_of_exactly_the_size_limit_is_accepted() -> None:
    raw = padded_definition(c.WORKFLOW_MAX_DEFINITION_BYTES)
    definition = parse_definition(raw, known_tasks=KNOWN)
    # Stored as validated, plus the name, the deadline and each task's id.
    stored = len(definition.to_json().encode())
    assert stored <= c.WORKFLOW_MAX_DEFINITION_BYTES + 50 + 16 * len(definition.tasks)


def test_shared_lists_that_would_serialise_to_gigabytes_are_refused() -> None:
    problems = problems_of(one_task(args=[shared_list_bomb()]))
    assert problems == ["the definition is larger than the limit of 1,048,576 bytes (as JSON)"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"deadline": float("inf"), **one_task()}, "deadline: inf is not a finite number"),
        ({"deadline": 10**5000, **one_task()}, "deadline: <an integer of about 5,001 digits>"),
        (one_task(args=[float("nan")]), "tasks.a.args[0]: nan is not a finite number"),
        (one_task(kwargs={"k": {1: "x"}}), "tasks.a.kwargs.k: the key 1 is not a string"),
        (one_task(kwargs={"k": {1, 2}}), "tasks.a.kwargs.k: <set of 2> is not JSON data"),
        (one_task(args=["\ud800"]), "tasks.a.args[0]: a string holding a lone surrogate"),
    ],
    ids=["inf-deadline", "huge-int-deadline", "nan-arg", "int-key", "set", "surrogate"],
)
def test_a_python_value_json_cannot_hold_is_refused_with_its_path(raw: Any, expected: str) -> None:
    problems = problems_of(raw)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_python_data_nested_100000_deep_is_refused() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    problems = problems_of(one_task(args=value))
    assert len(problems) == 1
    assert problems[0].endswith("nested deeper than 32 levels")


def test_the_problem_list_is_clipped_with_a_count_of_the_rest() -> None:
    tasks = {f"t{i}": {"task": FETCH, "options": {"queue": "nowhere"}} for i in range(100)}
    problems = problems_of({"tasks": tasks})
    assert len(problems) == 20
    assert problems[-1] == "... and 81 more problems"


# --- properties: whatever comes in, a validation error or a valid definition ----------------

VALID_YAML = YAML_DEFINITION.encode()
VALID_JSON = json.dumps(valid_mapping()).encode()
REGISTERED = frozenset({FETCH, SUMMARIZE, "celery.chunks"})
POLICY = WorkflowTaskPolicy.from_patterns(["tests.*"])


@st.composite
def spliced(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes replaced by others: mostly valid, broken somewhere."""
    start = draw(st.integers(0, len(base)))
    cut = draw(st.integers(0, 16))
    return base[:start] + draw(st.binary(max_size=16)) + base[start + cut :]


@contextmanager
def memory_peak() -> Iterator[list[int]]:
    """The peak of memory allocated in the block, in bytes (appended to the yielded list)."""
    tracemalloc.start()
    peak: list[int] = []
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def submit_path(path: Path) -> WorkflowDefinition | WorkflowValidationError:
    """What ``workflow submit PATH`` does before Redis: load, then validate."""
    try:
        return parse_and_build(load_definition_file(path), known_tasks=REGISTERED, policy=POLICY)[0]
    except WorkflowValidationError as exc:
        return exc


@settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.binary(),
    st.sampled_from(["wf.yaml", "wf.json"]),
    st.one_of(st.binary(), spliced(VALID_YAML), spliced(VALID_JSON)),
)
def test_any_bytes_as_a_workflow_file_end_in_a_validation_error_or_a_valid_definition(
    raw: bytes, name: str, mutated: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for data in (raw, mutated):
            path = Path(tmp) / name
            path.write_bytes(data)
            with memory_peak() as peak:
                outcome = submit_path(path)
            assert peak[0] < 200 * 1024 * 1024
            assert isinstance(outcome, WorkflowDefinition | WorkflowValidationError)
            if isinstance(outcome, WorkflowValidationError):
                assert 1 <= len(outcome.problems) <= 20
                assert all(len(problem) <= 300 for problem in outcome.problems)


SPECIAL = st.sampled_from(
    [float("inf"), float("nan"), 10**18, "\ud800", FETCH, "a", "b", "all_done"]
)
# Built on draw: Hypothesis describes a strategy by its values' reprs, and a 5,000-digit int
# has none.
HUGE_INTS = st.integers(4_400, 5_000).map(lambda digits: 10**digits)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | SPECIAL
    | HUGE_INTS
)
KEYS = (
    st.text(max_size=12)
    | st.sampled_from(sorted(TASK_FIELDS | {"name", "deadline", "tasks", "queue", "priority"}))
    | st.integers()
    | st.none()
    | st.tuples(st.integers())
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(KEYS, inner, max_size=4)
    ),
    max_leaves=30,
)
TASK_LIKE = st.dictionaries(st.sampled_from(sorted(TASK_FIELDS)), JSON_LIKE, max_size=4).map(
    lambda fields: {"task": FETCH, **fields}
)
DEFINITION_LIKE = JSON_LIKE | st.fixed_dictionaries(
    {"tasks": st.dictionaries(st.sampled_from(["a", "b", "c"]), TASK_LIKE, min_size=1)},
    optional={"name": JSON_LIKE, "deadline": JSON_LIKE},
)


@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(DEFINITION_LIKE)
def test_any_json_like_python_value_ends_in_a_validation_error_or_a_stored_definition(
    raw: Any,
) -> None:
    with memory_peak() as peak:
        try:
            definition = parse_definition(raw, known_tasks=REGISTERED, policy=POLICY)
        except WorkflowValidationError as exc:
            assert 1 <= len(exc.problems) <= 20
            assert all(len(problem) <= 300 for problem in exc.problems)
            definition = None
    assert peak[0] < 200 * 1024 * 1024
    if definition is not None:  # what is accepted can be stored and read back as it was
        stored = definition.to_json()
        assert WorkflowDefinition.from_json(stored.encode()) == definition
        assert all(t.timeout is None or math.isfinite(t.timeout) for t in definition.tasks.values())
