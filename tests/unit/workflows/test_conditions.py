"""The condition language of DAG tasks: what it accepts, what it refuses, how it evaluates."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest

from personal_assistant.workers.workflows.conditions import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_SOURCE_LENGTH,
    Condition,
    ConditionError,
    ConditionEvaluationError,
    TaskOutcome,
    parse_condition,
)


def completed(result: Any = None, **fields: Any) -> TaskOutcome:
    """A completed upstream task with ``result``."""
    return TaskOutcome(status="completed", result=result, **fields)


def evaluate(source: str, **outcomes: TaskOutcome) -> bool:
    """Parse ``source`` and evaluate it over the keyword outcomes."""
    return Condition.parse(source).evaluate(outcomes)


# --- the seed form and ordinary conditions -------------------------------------------------


def test_the_seed_condition_is_true_for_a_completed_task() -> None:
    condition = Condition.parse("task_a.status == 'completed'")
    assert condition.evaluate({"task_a": TaskOutcome(status="completed")}) is True


def test_the_seed_condition_is_false_for_a_failed_task() -> None:
    condition = Condition.parse("task_a.status == 'completed'")
    assert condition.evaluate({"task_a": TaskOutcome(status="failed")}) is False


def test_a_result_count_and_another_tasks_status_combine_with_and() -> None:
    source = "task_a.result['count'] > 10 and task_b.status != 'failed'"
    task_b = TaskOutcome(status="completed")
    assert evaluate(source, task_a=completed({"count": 11, "x": {"y": 1}}), task_b=task_b)
    assert not evaluate(source, task_a=completed({"count": 10}), task_b=task_b)
    assert not evaluate(source, task_a=completed({"count": 11}), task_b=TaskOutcome("failed"))


def test_chained_subscripts_reach_into_nested_results() -> None:
    result = {"items": [{"id": "x"}, {"id": "y"}]}
    assert evaluate("a.result['items'][0]['id'] == 'x'", a=completed(result))
    assert evaluate("a.result['items'][-1]['id'] == 'y'", a=completed(result))


def test_in_looks_inside_a_list_result() -> None:
    assert evaluate("'urgent' in a.result['labels']", a=completed({"labels": ["urgent"]}))
    assert not evaluate("'urgent' in a.result['labels']", a=completed({"labels": ["low"]}))


def test_in_accepts_a_list_display_of_constants() -> None:
    assert evaluate("a.status in ['completed', 'skipped']", a=TaskOutcome("skipped"))
    assert evaluate("a.status not in ('failed', 'timed_out')", a=completed())


def test_duration_compares_with_a_float() -> None:
    assert evaluate("a.duration < 5.0", a=completed(duration=1.5))
    assert not evaluate("a.duration < 5.0", a=completed(duration=7.0))


def test_error_is_none_for_a_clean_run() -> None:
    assert evaluate("a.error is None", a=completed())
    assert not evaluate("a.error is None", a=TaskOutcome("failed", error="boom"))


def test_not_negates_a_comparison() -> None:
    assert evaluate("not a.status == 'skipped'", a=completed())
    assert not evaluate("not a.status == 'skipped'", a=TaskOutcome("skipped"))


def test_a_chained_comparison_holds_only_when_every_link_holds() -> None:
    source = "0 < a.result['n'] <= 10"
    assert evaluate(source, a=completed({"n": 10}))
    assert not evaluate(source, a=completed({"n": 0}))
    assert not evaluate(source, a=completed({"n": 11}))


def test_a_negative_number_literal_is_allowed() -> None:
    assert evaluate("a.result['t'] > -1", a=completed({"t": 0}))


def test_and_or_return_bool_even_over_non_bool_values() -> None:
    assert evaluate("a.result['x'] or a.result['y']", a=completed({"x": 0, "y": "text"})) is True


def test_or_short_circuits_past_a_part_that_would_fail() -> None:
    # b has no outcome at all; evaluating `b.status` would raise, so it must not be reached.
    assert evaluate("a.status == 'completed' or b.status == 'completed'", a=completed())


def test_surrounding_whitespace_is_ignored() -> None:
    condition = Condition.parse("\n  a.status == 'completed'\n")
    assert condition.source == "a.status == 'completed'"
    assert condition.evaluate({"a": completed()})


def test_parse_condition_is_the_same_as_condition_parse() -> None:
    assert parse_condition("a.status == 'x'") == Condition.parse("a.status == 'x'")


def test_a_condition_survives_pickling_as_its_source() -> None:
    condition = Condition.parse("a.result['n'] >= 2")
    copy = pickle.loads(pickle.dumps(condition))  # noqa: S301 - our own bytes
    assert copy == condition
    assert copy.evaluate({"a": completed({"n": 2})})


# --- names --------------------------------------------------------------------------------


def test_names_lists_the_referenced_task_ids() -> None:
    condition = Condition.parse("a.status == 'x' and (b.result[0] > 1 or a.error is None)")
    assert condition.names == frozenset({"a", "b"})


def test_a_constant_condition_references_no_task() -> None:
    assert Condition.parse("True").names == frozenset()


def test_a_name_outside_allowed_names_is_refused_listing_the_allowed_names() -> None:
    with pytest.raises(ConditionError, match="allowed names: a, c") as caught:
        Condition.parse("b.status == 'x'", allowed_names=["c", "a"])
    assert "`b`" in str(caught.value)


def test_names_inside_allowed_names_are_accepted() -> None:
    condition = Condition.parse("a.status == 'x'", allowed_names={"a", "b"})
    assert condition.names == frozenset({"a"})


# --- hostile or malformed input -----------------------------------------------------------


HOSTILE = [
    pytest.param("__import__('os')", "calls are not allowed: `__import__('os')`", id="import"),
    pytest.param("().__class__.__bases__", "dunder", id="class-bases"),
    pytest.param("a.__class__", "dunder attributes are not allowed: `a.__class__`", id="dunder"),
    pytest.param("a.result.__class__", "dunder", id="result-dunder"),
    pytest.param("a.result.keys()", "calls are not allowed", id="method-call"),
    pytest.param("lambda: 1", "lambdas are not allowed", id="lambda"),
    pytest.param("(lambda x: x)(1)", "calls are not allowed", id="called-lambda"),
    pytest.param("[x for x in a.result]", "comprehensions are not allowed", id="comprehension"),
    pytest.param("9**9**9", "arithmetic is not allowed: `9**9**9`", id="power"),
    pytest.param("1 + 1", "arithmetic is not allowed", id="addition"),
    pytest.param("a.result[a.status]", "index must be a constant", id="computed-index"),
    pytest.param("a.result[0:2]", "slices are not allowed", id="slice"),
    pytest.param("f'{a.status}'", "f-strings are not allowed", id="f-string"),
    pytest.param("{'k': 1}", "dict displays are not allowed", id="dict"),
    pytest.param("(y := 1)", "assignment expressions", id="walrus"),
    pytest.param("a.status if True else 1", "conditional expressions", id="if-expression"),
    pytest.param("open('/etc/passwd')", "calls are not allowed: `open('/etc/passwd')`", id="open"),
    pytest.param("getattr(a, 'status')", "calls are not allowed", id="getattr"),
    pytest.param("_secret.status", "names starting with '_'", id="underscore-name"),
    pytest.param("a.foo", "attribute .foo is not allowed", id="unknown-attribute"),
    pytest.param("a.result.status", "only allowed on a task name", id="attribute-on-result"),
    pytest.param("a.status[0]", "only <task>.result", id="subscript-on-status"),
    pytest.param("a", "a task name is not a value", id="bare-name"),
    pytest.param("a.status is 'x'", "`is` may only compare with None", id="is-string"),
    pytest.param("a.result[True]", "index must be a constant", id="bool-index"),
    pytest.param("~1", "arithmetic is not allowed", id="invert"),
    pytest.param("-a.duration", "arithmetic is not allowed", id="minus-on-field"),
    pytest.param("[1, [2]]", "displays may only hold constants: `[2]`", id="nested-display"),
    pytest.param("b'x' == a.result", "constants of type bytes", id="bytes"),
    pytest.param("1e400 > a.duration", "numbers must be finite", id="infinity"),
    pytest.param("a.status ==", "cannot parse condition", id="syntax-error"),
    pytest.param(
        "a.status == 'x' or " * 5000 + "True",
        f"the limit is {MAX_SOURCE_LENGTH}",
        id="100k-characters",
    ),
    pytest.param("(" * 200 + "1" + ")" * 200, f"nested more than {MAX_DEPTH}", id="parens"),
    pytest.param("not " * 1000 + "True", f"the limit is {MAX_SOURCE_LENGTH}", id="1000-nots"),
    pytest.param("not " * 40 + "True", f"nested more than {MAX_DEPTH} deep", id="40-nots"),
    pytest.param("-" * 1999 + "1", f"nested more than {MAX_DEPTH} deep", id="1999-minuses"),
    pytest.param("0 in [" + "1," * 600 + "1]", f"more than {MAX_NODES} nodes", id="many-nodes"),
    pytest.param("'" + "x" * 10_000 + "'", f"the limit is {MAX_SOURCE_LENGTH}", id="10k-string"),
    pytest.param("'" + "x" * 1_001 + "' == a.status", "strings are limited", id="1001-string"),
    pytest.param("10000000000000000000", "integers are limited to 10**18", id="10**19"),
    pytest.param("a.status ==\x00 'x'", "null bytes are not allowed", id="null-byte"),
    pytest.param("", "condition is empty", id="empty"),
    pytest.param(" \n\t ", "condition is empty", id="whitespace"),
]


@pytest.mark.parametrize(("source", "message"), HOSTILE)
def test_a_hostile_or_malformed_condition_is_refused_naming_the_problem(
    source: str, message: str
) -> None:
    with pytest.raises(ConditionError) as caught:
        Condition.parse(source)
    assert message in str(caught.value)
    assert not isinstance(caught.value, ConditionEvaluationError)


def test_a_call_is_refused_naming_the_call() -> None:
    with pytest.raises(ConditionError, match=r"calls are not allowed: `__import__\('os'\)`"):
        Condition.parse("a.status == 'x' and __import__('os')")


def test_a_long_offending_part_is_truncated_in_the_message() -> None:
    with pytest.raises(ConditionError) as caught:
        Condition.parse("len(" + "a.status, " * 30 + "a.status)")
    assert str(caught.value).endswith("...`")
    assert len(str(caught.value)) < 120


def test_thirty_two_levels_of_nesting_are_still_accepted() -> None:
    # 31 `not`s put the innermost constant at depth 32, the limit itself.
    assert evaluate("not " * 31 + "False")


def test_the_largest_allowed_integer_is_accepted() -> None:
    assert evaluate("a.result['n'] == -1000000000000000000", a=completed({"n": -(10**18)}))


# --- evaluation problems ------------------------------------------------------------------


EVALUATION_PROBLEMS = [
    pytest.param("a.result['n'] > 3", {"m": 1}, "key not found: 'n'", id="missing-key"),
    pytest.param("a.result[3] == 1", [1, 2], "index out of range", id="index-out-of-range"),
    pytest.param("a.result['n'] > 3", {"n": "4"}, "'4' > 3", id="string-vs-int"),
    pytest.param("a.result['n'] == 1", None, "NoneType cannot be indexed", id="none-result"),
    pytest.param("a.result['n'] == 1", [1], "list indices must be", id="str-key-on-list"),
    pytest.param("1 in a.result['s']", {"s": "abc"}, "in `1 in a.result['s']`", id="int-in-str"),
    pytest.param("a.result[0][0] == 1", [5], "int cannot be indexed", id="index-into-int"),
]


@pytest.mark.parametrize(("source", "result", "message"), EVALUATION_PROBLEMS)
def test_a_data_problem_raises_an_evaluation_error_naming_the_sub_expression(
    source: str, result: Any, message: str
) -> None:
    condition = Condition.parse(source)
    with pytest.raises(ConditionEvaluationError) as caught:
        condition.evaluate({"a": completed(result)})
    assert message in str(caught.value)
    assert "`a.result" in str(caught.value) or "`1 in" in str(caught.value)


def test_a_task_missing_from_outcomes_raises_an_evaluation_error() -> None:
    condition = Condition.parse("a.status == 'completed' and b.status == 'completed'")
    with pytest.raises(ConditionEvaluationError, match=r"task 'b' has no outcome in `b\.status`"):
        condition.evaluate({"a": completed()})


def test_an_evaluation_error_is_a_condition_error() -> None:
    assert issubclass(ConditionEvaluationError, ConditionError)
    assert issubclass(ConditionError, ValueError)


# --- garbage never escapes as anything but ConditionError ---------------------------------

_PIECES = [
    "a", "b", "_x", ".status", ".result", ".error", ".duration", ".__class__", "[", "]", "(",
    ")", "{", "}", "'", '"', "'s'", "0", "-", "1e9", "==", "<", "in", "not", "and", "or", "is",
    "None", "True", ",", ":", "lambda", "**", "\\", "\n", " ", "#", "@", "$", "f'", "0x", "\t",
]  # fmt: skip


def _garbage(rng: random.Random) -> str:
    """A short random string: sometimes characters, mostly plausible-looking pieces."""
    if rng.random() < 0.3:
        return "".join(rng.choice("ab.[]()'\"=<> -_0123456789\\:,{}\n") for _ in range(12))
    return " ".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8)))


def test_random_garbage_is_either_accepted_or_refused_with_a_condition_error() -> None:
    rng = random.Random(20240607)  # fixed seed: the same 3,000 strings on every run
    outcomes = {"a": completed({"s": [1]}, duration=1.0), "b": TaskOutcome("failed")}
    accepted = 0
    for _ in range(3_000):
        source = _garbage(rng)
        try:
            condition = Condition.parse(source)
        except ConditionError:
            continue
        accepted += 1
        try:
            value = condition.evaluate(outcomes)
        except ConditionEvaluationError:
            continue  # a data problem, reported as the caller expects
        assert isinstance(value, bool)
    assert accepted > 0  # the generator does reach the evaluator
