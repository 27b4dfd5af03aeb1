"""Airflow's trigger rules: what each rule decides for a task, given its upstreams' statuses."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from personal_assistant.workers.workflows.trigger_rules import (
    FAILED_LIKE,
    TERMINAL,
    Decision,
    Status,
    TriggerRule,
    decide,
    decide_counts,
    parse_trigger_rule,
)

RUN, WAIT, SKIP, UPSTREAM_FAILED = (
    Decision.RUN,
    Decision.WAIT,
    Decision.SKIP,
    Decision.UPSTREAM_FAILED,
)

# Two upstreams in every mix, so "one of" and "all of" rules answer differently.
MIXES: dict[str, tuple[str, ...]] = {
    "both completed": ("completed", "completed"),
    "completed and running": ("completed", "running"),
    "failed and running": ("failed", "running"),
    "both failed": ("failed", "failed"),
    "completed and failed": ("completed", "failed"),
    "both skipped": ("skipped", "skipped"),
    "completed and skipped": ("completed", "skipped"),
    "skipped and running": ("skipped", "running"),
    "failed and skipped": ("failed", "skipped"),
    "pending and queued": ("pending", "queued"),
}

# Airflow's semantics (airflow/ti_deps/deps/trigger_rule_dep.py), one column per mix above.
EXPECTED: dict[TriggerRule, tuple[Decision, ...]] = {
    TriggerRule.ALL_SUCCESS: (RUN, WAIT, UPSTREAM_FAILED, UPSTREAM_FAILED, UPSTREAM_FAILED,
                              SKIP, SKIP, SKIP, UPSTREAM_FAILED, WAIT),
    TriggerRule.ALL_FAILED: (SKIP, SKIP, WAIT, RUN, SKIP, SKIP, SKIP, SKIP, SKIP, WAIT),
    TriggerRule.ALL_DONE: (RUN, WAIT, WAIT, RUN, RUN, RUN, RUN, WAIT, RUN, WAIT),
    TriggerRule.ONE_SUCCESS: (RUN, RUN, WAIT, UPSTREAM_FAILED, RUN, SKIP, RUN, WAIT,
                              UPSTREAM_FAILED, WAIT),
    TriggerRule.ONE_FAILED: (SKIP, WAIT, RUN, RUN, RUN, SKIP, SKIP, WAIT, RUN, WAIT),
    TriggerRule.NONE_FAILED: (RUN, WAIT, UPSTREAM_FAILED, UPSTREAM_FAILED, UPSTREAM_FAILED,
                              RUN, RUN, WAIT, UPSTREAM_FAILED, WAIT),
    TriggerRule.NONE_SKIPPED: (RUN, WAIT, WAIT, RUN, RUN, SKIP, SKIP, SKIP, SKIP, WAIT),
    TriggerRule.ALWAYS: (RUN,) * len(MIXES),
}  # fmt: skip

TABLE = [
    pytest.param(rule, MIXES[mix], expected, id=f"{rule.value}-{mix.replace(' ', '-')}")
    for rule, row in EXPECTED.items()
    for mix, expected in zip(MIXES, row, strict=True)
]

FAILURES = ("failed", "upstream_failed", "timed_out", "cancelled")


def tally(statuses: Sequence[str]) -> tuple[int, int, int, int]:
    """``(total, succeeded, failed-like, skipped)`` of upstream statuses, spelled out."""
    return (
        len(statuses),
        sum(s == "completed" for s in statuses),
        sum(s in FAILURES for s in statuses),
        sum(s == "skipped" for s in statuses),
    )


def test_the_table_covers_every_rule() -> None:
    assert set(EXPECTED) == set(TriggerRule)


@pytest.mark.parametrize(("rule", "statuses", "expected"), TABLE)
def test_decide_applies_airflows_semantics(
    rule: TriggerRule, statuses: tuple[str, ...], expected: Decision
) -> None:
    assert decide(rule, statuses) is expected


@pytest.mark.parametrize(("rule", "statuses", "expected"), TABLE)
def test_decide_counts_gives_the_same_answer_from_a_tally(
    rule: TriggerRule, statuses: tuple[str, ...], expected: Decision
) -> None:
    assert decide_counts(rule, *tally(statuses)) is expected


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_a_task_without_upstreams_always_runs(rule: TriggerRule) -> None:
    assert decide(rule, []) is RUN
    assert decide_counts(rule, 0, 0, 0, 0) is RUN


@pytest.mark.parametrize("failure", FAILURES)
def test_every_failure_like_status_counts_as_a_failure(failure: str) -> None:
    assert decide(TriggerRule.ALL_SUCCESS, [failure, "completed"]) is UPSTREAM_FAILED
    assert decide(TriggerRule.NONE_FAILED, [failure, "completed"]) is UPSTREAM_FAILED
    assert decide(TriggerRule.ONE_FAILED, [failure, "completed"]) is RUN
    assert decide(TriggerRule.ALL_FAILED, [failure, "failed"]) is RUN
    assert decide(TriggerRule.ONE_SUCCESS, [failure, "failed"]) is UPSTREAM_FAILED


def test_decide_counts_agrees_with_decide_on_every_mix_of_up_to_three_upstreams() -> None:
    statuses = ("completed", "failed", "skipped", "running", "timed_out")
    for rule in TriggerRule:
        for size in range(4):
            for mix in itertools.combinations_with_replacement(statuses, size):
                assert decide_counts(rule, *tally(mix)) is decide(rule, mix), (rule, mix)


def test_all_success_fails_at_the_first_failure_without_waiting_for_the_rest() -> None:
    assert decide(TriggerRule.ALL_SUCCESS, ["failed", *["pending"] * 99]) is UPSTREAM_FAILED


def test_one_success_runs_at_the_first_success_of_a_large_fan_in() -> None:
    assert decide(TriggerRule.ONE_SUCCESS, [*["pending"] * 999, "completed"]) is RUN


def test_a_failure_outranks_a_skip_for_all_success() -> None:
    # Airflow checks failed/upstream_failed before skipped.
    assert decide(TriggerRule.ALL_SUCCESS, ["skipped", "failed", "running"]) is UPSTREAM_FAILED


def test_none_skipped_runs_after_failures_as_in_airflow() -> None:
    assert decide(TriggerRule.NONE_SKIPPED, ["failed", "upstream_failed"]) is RUN


def test_decide_reads_any_iterable_once() -> None:
    statuses = iter(["completed", "completed"])
    assert decide(TriggerRule.ALL_SUCCESS, statuses) is RUN


def test_status_members_and_their_strings_decide_alike() -> None:
    members = [Status.COMPLETED, Status.SKIPPED]
    assert decide(TriggerRule.NONE_FAILED, members) is RUN
    assert decide(TriggerRule.NONE_SKIPPED, members) is SKIP


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_parse_trigger_rule_reads_every_rule_by_its_airflow_name(rule: TriggerRule) -> None:
    assert parse_trigger_rule(rule.value) is rule


def test_an_unknown_trigger_rule_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown trigger rule 'bogus'") as caught:
        parse_trigger_rule("bogus")
    message = str(caught.value)
    for rule in TriggerRule:
        assert rule.value in message


def test_a_trigger_rule_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ValueError, match="known rules"):
        parse_trigger_rule(None)  # type: ignore[arg-type]


def test_the_rule_names_are_airflows() -> None:
    assert {rule.value for rule in TriggerRule} == {
        "all_success",
        "all_failed",
        "all_done",
        "one_success",
        "one_failed",
        "none_failed",
        "none_skipped",
        "always",
    }


def test_statuses_use_the_seeds_words_plus_the_workflow_ones() -> None:
    words = {status.value for status in Status}
    assert {"running", "completed", "failed", "skipped", "upstream_failed", "timed_out"} <= words


def test_only_ended_statuses_are_terminal_and_a_timeout_is_a_failure() -> None:
    assert {"pending", "queued", "running"}.isdisjoint(TERMINAL)
    assert set(FAILURES) == set(FAILED_LIKE)
    assert FAILED_LIKE <= TERMINAL
    assert "completed" not in FAILED_LIKE
    assert "skipped" not in FAILED_LIKE
