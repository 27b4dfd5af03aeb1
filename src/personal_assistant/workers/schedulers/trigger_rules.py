"""Task statuses and Airflow's trigger rules: when a task with upstreams runs, skips or fails.

A rule looks at the statuses of a task's direct upstreams and answers one of:
``RUN`` (its condition, if any, is checked next), ``WAIT`` (not decided yet), ``SKIP``
(becomes ``skipped``) or ``UPSTREAM_FAILED`` (becomes ``upstream_failed``). These are Airflow's
semantics, so "run B when A failed" or "clean up when all are done" read as Airflow users expect.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def decide_counts(
    rule: TriggerRule, total: int, succeeded: int, failed: int, skipped: int,
) -> Decision:
    """Apply ``rule`` to a tally of ``total`` upstreams, of which so many ended each way.

    Workflows keep this tally per task as upstreams end, so a fan-in of N upstreams costs O(1)
    per upstream end instead of re-reading N statuses.
    """
    if rule is TriggerRule.ALWAYS or total == 0:
        return Decision.RUN
    all_done = succeeded + failed + skipped == total

    if rule is TriggerRule.ALL_SUCCESS:
        if failed:
            return Decision.UPSTREAM_FAILED
        if skipped:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_FAILED:
        if succeeded or skipped:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_DONE:
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ONE_SUCCESS:
        if succeeded:
            return Decision.RUN
        if not all_done:
            return Decision.WAIT
        return Decision.UPSTREAM_FAILED if failed else Decision.SKIP
    if rule is TriggerRule.ONE_FAILED:
        if failed:
            return Decision.RUN
        return Decision.SKIP if all_done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED:
        if failed:
            return Decision.UPSTREAM_FAILED
        return Decision.RUN if all_done else Decision.WAIT
    # NONE_SKIPPED
    if skipped:
        return Decision.SKIP
    return Decision.RUN if all_done else Decision.WAIT
