"""Task statuses and Airflow's trigger rules: when a task with upstreams runs, skips or fails.

A rule looks at the statuses of a task's direct upstreams and answers one of:
``RUN`` (its condition, if any, is checked next), ``WAIT`` (not decided yet), ``SKIP``
(becomes ``skipped``) or ``UPSTREAM_FAILED`` (becomes ``upstream_failed``). These are Airflow's
semantics, so "run B when A failed" or "clean up when all are done" read as Airflow users expect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum


class Status(StrEnum):
    """Status of a task in a workflow, in the seed's words plus the workflow ones."""

    PENDING = "pending"  # waiting for its upstreams
    QUEUED = "queued"  # decided ready and dispatched, not started yet
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {
        Status.COMPLETED,
        Status.FAILED,
        Status.SKIPPED,
        Status.UPSTREAM_FAILED,
        Status.TIMED_OUT,
        Status.CANCELLED,
    }
)
# What counts as a failure for the rules: a timeout propagates as one; so does a cancellation.
FAILED_LIKE = frozenset({Status.FAILED, Status.UPSTREAM_FAILED, Status.TIMED_OUT, Status.CANCELLED})


class TriggerRule(StrEnum):
    """Airflow's trigger rules."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"


class Decision(StrEnum):
    """What a rule decides for a task, given its upstreams now."""

    RUN = "run"
    WAIT = "wait"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


_RULES_BY_NAME = {rule.value: rule for rule in TriggerRule}


def parse_trigger_rule(value: str) -> TriggerRule:
    """The rule named ``value``; ValueError listing the known rules otherwise."""
    try:
        return _RULES_BY_NAME[value]
    except (KeyError, TypeError):
        known = ", ".join(rule.value for rule in TriggerRule)
        raise ValueError(f"unknown trigger rule {value!r}; known rules: {known}") from None


# Index of each final status in a task's upstream tally: [succeeded, failed-like, skipped].
SUCCEEDED, FAILED, SKIPPED = 0, 1, 2


def outcome_index(status: str) -> int:
    """Where a final status is tallied among a dependent's upstream outcomes."""
    if status == Status.COMPLETED:
        return SUCCEEDED
    if status == Status.SKIPPED:
        return SKIPPED
    return FAILED


def decide(rule: TriggerRule, upstream_statuses: Iterable[str]) -> Decision:
    """Apply ``rule`` to the direct upstreams' statuses (Airflow's semantics)."""
    statuses = list(upstream_statuses)
    tally = [0, 0, 0]
    for status in statuses:
        if status in TERMINAL:
            tally[outcome_index(status)] += 1
    return decide_counts(rule, len(statuses), *tally)


def _when_all_done(done: bool) -> Decision:
    return Decision.RUN if done else Decision.WAIT


def _all_success(succeeded: int, failed: int, skipped: int, done: bool) -> Decision:
    if failed:
        return Decision.UPSTREAM_FAILED
    return Decision.SKIP if skipped else _when_all_done(done)


def _all_failed(succeeded: int, failed: int, skipped: int, done: bool) -> Decision:
    return Decision.SKIP if succeeded or skipped else _when_all_done(done)


def _all_done(succeeded: int, failed: int, skipped: int, done: bool) -> Decision:
    return _when_all_done(done)


def _one_success(succeeded: int, failed: int, skipped: int, done: bool) -> Decision:
    if succeeded or not done:
        return Decision.RUN if succeeded else Decision.WAIT
    return Decision.UPSTREAM_FAILED if failed else Decision.SKIP


def _one_failed(succeeded: int, failed: int, skipped: int, done: bool) -> Decision:
    if failed:
        return Decision.RUN
    return Decision.SKIP if done else Decision.WAIT


def _none_failed(succeeded: int, failed: int, skipped: int, done: bool) -> Decision:
    return Decision.UPSTREAM_FAILED if failed else _when_all_done(done)


def _none_skipped(succeeded: int, failed: int, skipped: int, done: bool) -> Decision:
    return Decision.SKIP if skipped else _when_all_done(done)


def _always(succeeded: int, failed: int, skipped: int, done: bool) -> Decision:
    return Decision.RUN


_RULE_DECISIONS: dict[TriggerRule, Callable[[int, int, int, bool], Decision]] = {
    TriggerRule.ALL_SUCCESS: _all_success,
    TriggerRule.ALL_FAILED: _all_failed,
    TriggerRule.ALL_DONE: _all_done,
    TriggerRule.ONE_SUCCESS: _one_success,
    TriggerRule.ONE_FAILED: _one_failed,
    TriggerRule.NONE_FAILED: _none_failed,
    TriggerRule.NONE_SKIPPED: _none_skipped,
    TriggerRule.ALWAYS: _always,
}


def decide_counts(
    rule: TriggerRule,
    total: int,
    succeeded: int,
    failed: int,
    skipped: int,
) -> Decision:
    """Apply ``rule`` to a tally of ``total`` upstreams, of which so many ended each way.

    Workflows keep this tally per task as upstreams end, so a fan-in of N upstreams costs O(1)
    per upstream end instead of re-reading N statuses.
    """
    if total == 0:
        return Decision.RUN
    done = succeeded + failed + skipped == total
    return _RULE_DECISIONS[rule](succeeded, failed, skipped, done)
