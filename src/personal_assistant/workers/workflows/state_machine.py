"""Task dependencies: run a task when its upstreams are done, by rule and condition, in time.

:class:`DependencyScheduler` is the in-memory state machine of one workflow (the seed's API,
complete): dependencies form an always-acyclic graph (dag.py), each task has an Airflow trigger
rule (trigger_rules.py) and an optional safe condition (conditions.py), and ``record_status``
returns the tasks that just became ready while propagating skips and failures downstream.

The Redis-backed runtime (runtime.py) drives this same machine from many workers, with the
"this task is now ready" decision made atomically in Redis. The seed's import path,
``schedulers.dependency_scheduler``, re-exports this module with ``submit_workflow`` and
``workflow_status``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from personal_assistant.workers.workflows.conditions import (
    Condition,
    ConditionError,
    ConditionEvaluationError,
    TaskOutcome,
    parse_condition,
)
from personal_assistant.workers.workflows.dag import CycleError, DependencyGraph
from personal_assistant.workers.workflows.trigger_rules import (
    FAILED_LIKE,
    TERMINAL,
    Decision,
    Status,
    TriggerRule,
    decide_counts,
    outcome_index,
    parse_trigger_rule,
)

__all__ = [
    "ConditionError",
    "CycleError",
    "DependencyScheduler",
    "Status",
    "TaskDependency",
    "TaskState",
    "TriggerRule",
]


@dataclass
class TaskDependency:
    """Task ``task_id`` runs after ``depends_on``, by ``trigger_rule``, if ``condition`` holds.

    ``timeout``: how long the task may wait for its dependencies (from the workflow's start)
    before it becomes ``timed_out``.
    """

    task_id: str
    depends_on: list[str] = field(default_factory=list)
    condition: str | None = None
    timeout: timedelta | None = None
    trigger_rule: str = "all_success"


@dataclass
class TaskState:
    """Where one task of the workflow stands."""

    status: str = Status.PENDING
    result: Any = None
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    #: How this task's upstreams ended so far: [succeeded, failed-like, skipped].
    upstream_outcomes: list[int] = field(default_factory=lambda: [0, 0, 0])

    @property
    def duration(self) -> float | None:
        """Run time in seconds, once started and ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


_TASK_ID_TYPES = {str}


def _check_dependency(dependency: TaskDependency) -> tuple[TriggerRule, Condition | None]:
    """Validate one dependency; return its parsed rule and condition."""
    task_id, depends_on = dependency.task_id, dependency.depends_on
    if type(task_id) is not str or not task_id:
        raise ValueError(f"task_id must be a non-empty string (got {task_id!r})")
    # set(map(type, ...)) runs in C: this check is on the path of bulk loads of 10^5 tasks.
    if (
        isinstance(depends_on, str | bytes)
        or not set(map(type, depends_on)) <= _TASK_ID_TYPES
        or "" in depends_on
    ):
        raise ValueError(f"{task_id}: depends_on must be a list of task ids (got {depends_on!r})")
    rule = parse_trigger_rule(dependency.trigger_rule)
    timeout = dependency.timeout
    if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta(0)):
        raise ValueError(f"{task_id}: timeout must be a positive timedelta (got {timeout!r})")
    condition = None
    if dependency.condition is not None:
        condition = parse_condition(dependency.condition, allowed_names=depends_on)
    return rule, condition


class DependencyScheduler:
    """The dependency state machine of one workflow (not thread-safe; one owner at a time)."""

    def __init__(
        self, *, deadline: timedelta | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.dependencies: dict[str, TaskDependency] = {}
        self.execution_graph = DependencyGraph()
        self.states: MutableMapping[str, TaskState] = {}
        self.deadline = deadline
        self.clock = clock
        self.started_at: float | None = None
        self._rules: dict[str, TriggerRule] = {}
        self._conditions: dict[str, Condition] = {}

    # -- building -----------------------------------------------------------------------------
    def add_dependency(self, dependency: TaskDependency) -> None:
        """Add (or replace) a task's dependencies; all or nothing.

        Raises ValueError for a bad field, ConditionError for a bad condition and CycleError
        (naming the cycle's path) when the dependency would close a cycle.
        """
        rule, condition = _check_dependency(dependency)
        self.execution_graph.set_upstreams(dependency.task_id, dependency.depends_on)
        self._register(dependency, rule, condition)
        for task_id in (dependency.task_id, *dependency.depends_on):
            self.states.setdefault(task_id, TaskState())

    def add_task(self, task_id: str) -> None:
        """Add a task with no dependencies (a root)."""
        self.add_dependency(TaskDependency(task_id=task_id))

    def add_dependencies(self, dependencies: Iterable[TaskDependency]) -> None:
        """Add many dependencies at once; all or nothing (one graph pass: fast for big loads)."""
        batch = list(dependencies)
        checked = [_check_dependency(d) for d in batch]
        self.execution_graph.set_many_upstreams({d.task_id: d.depends_on for d in batch})
        for dependency, (rule, condition) in zip(batch, checked, strict=True):
            self._register(dependency, rule, condition)
        for name in self.execution_graph.names():
            if name not in self.states:
                self.states[name] = TaskState()

    def _register(
        self, dependency: TaskDependency, rule: TriggerRule, condition: Condition | None
    ) -> None:
        """Keep a checked dependency's rule and condition (its edges are already in the graph)."""
        self.dependencies[dependency.task_id] = dependency
        self._rules[dependency.task_id] = rule
        if condition is None:
            self._conditions.pop(dependency.task_id, None)
        else:
            self._conditions[dependency.task_id] = condition

    @classmethod
    def from_mapping(cls, upstreams_of: Mapping[str, Sequence[str]]) -> DependencyScheduler:
        """A scheduler of ``{task: [tasks it depends on]}`` with default rules (bulk load)."""
        scheduler = cls()
        scheduler.add_dependencies(
            TaskDependency(task_id=t, depends_on=list(d)) for t, d in upstreams_of.items()
        )
        return scheduler

    # -- queries ------------------------------------------------------------------------------
    def get_execution_order(self) -> list[str]:
        """A deterministic topological order of every task, including those only depended on."""
        return self.execution_graph.topological_order()

    def check_dependencies_met(self, task_id: str) -> bool:
        """True when ``task_id``'s rule says run and its condition (if any) holds now."""
        self._known(task_id)
        if self._decide(task_id) is not Decision.RUN:
            return False
        return self._condition_holds(task_id)[0]

    def leaves(self) -> list[str]:
        """Tasks nothing depends on: they decide how the workflow ends."""
        graph = self.execution_graph
        return [name for name in graph.names() if not graph.downstreams(name)]

    def workflow_state(self) -> str:
        """``running`` until every task is final; then ``failed`` if a leaf failed (or timed
        out, or its upstream failed), else ``completed``."""
        if any(state.status not in TERMINAL for state in self.states.values()):
            return "running"
        if any(self.states[leaf].status in FAILED_LIKE for leaf in self.leaves()):
            return "failed"
        return "completed"

    # -- events -------------------------------------------------------------------------------
    def start(self, now: float | None = None) -> list[str]:
        """Start the clock for timeouts; return the tasks ready at once (roots, ``always``)."""
        self.started_at = self.clock() if now is None else now
        ready: list[str] = []
        skipped: list[str] = []
        for task_id in self.get_execution_order():
            if self.states[task_id].status == Status.PENDING:
                self._settle(task_id, ready, skipped)
        ready += self._propagate(skipped)
        return ready

    def record_status(
        self,
        task_id: str,
        status: str,
        result: Any = None,
        *,
        error: str | None = None,
        now: float | None = None,
        started_at: float | None = None,
    ) -> list[str]:
        """Record a task's new status; return the tasks that just became ready.

        A final status recorded twice (a redelivered message) is ignored the second time.
        ``started_at`` records when it started, if that was not recorded on its own.
        """
        self._known(task_id)
        new = Status(status)
        state = self.states[task_id]
        when = self.clock() if now is None else now
        if state.status in TERMINAL:
            return []
        if started_at is not None and state.started_at is None:
            state.started_at = started_at
        if new not in TERMINAL:
            state.status = new
            if new is Status.RUNNING and state.started_at is None:
                state.started_at = when
            return []
        self._finish(task_id, new, when, error=error, result=result)
        return self._propagate([task_id])

    def check_timeouts(self, now: float | None = None) -> list[str]:
        """Time out waiting tasks past their timeout (or all open ones past the deadline).

        Returns the tasks that became ready as a consequence (e.g. ``one_failed`` dependents).
        """
        when = self.clock() if now is None else now
        started = self.started_at if self.started_at is not None else when
        past_deadline = (
            self.deadline is not None and when >= started + self.deadline.total_seconds()
        )
        expired: list[str] = []
        for task_id, state in self.states.items():
            if state.status in TERMINAL:
                continue
            timeout = self.dependencies.get(task_id, TaskDependency(task_id)).timeout
            waiting = state.status == Status.PENDING
            if past_deadline or (
                waiting and timeout is not None and when >= started + timeout.total_seconds()
            ):
                expired.append(task_id)
        for task_id in expired:
            why = (
                "workflow deadline exceeded"
                if past_deadline
                else "dependencies not met within the timeout"
            )
            self._finish(task_id, Status.TIMED_OUT, when, error=why)
        return self._propagate(expired)

    def cancel(self, now: float | None = None) -> list[str]:
        """Cancel every unfinished task; return them."""
        when = self.clock() if now is None else now
        open_tasks = [t for t, s in self.states.items() if s.status not in TERMINAL]
        for task_id in open_tasks:
            self._finish(task_id, Status.CANCELLED, when, error="workflow cancelled")
        return open_tasks

    # -- internals ----------------------------------------------------------------------------
    def _known(self, task_id: str) -> None:
        if task_id not in self.states:
            raise KeyError(f"unknown task {task_id!r}")

    def _decide(self, task_id: str) -> Decision:
        total = self.execution_graph.upstream_count(task_id)
        rule = self._rules.get(task_id, TriggerRule.ALL_SUCCESS)
        return decide_counts(rule, total, *self.states[task_id].upstream_outcomes)

    def _finish(
        self,
        task_id: str,
        status: Status,
        when: float,
        *,
        error: str | None = None,
        result: Any = None,
    ) -> None:
        """The one way a task becomes final: its dependents' tallies count it once."""
        state = self.states[task_id]
        state.status, state.error, state.ended_at = status, error, when
        if result is not None:
            state.result = result
        index = outcome_index(status)
        for down in self.execution_graph.downstreams(task_id):
            self.states[down].upstream_outcomes[index] += 1

    def _condition_holds(self, task_id: str) -> tuple[bool, str | None]:
        condition = self._conditions.get(task_id)
        if condition is None:
            return True, None
        outcomes = {
            name: TaskOutcome(
                status=str(s.status), result=s.result, error=s.error, duration=s.duration
            )
            for name in condition.names
            for s in (self.states[name],)
        }
        try:
            if condition.evaluate(outcomes):
                return True, None
            return False, f"condition is false: {condition.source}"
        except ConditionEvaluationError as exc:
            return False, f"condition could not be evaluated: {exc}"

    def _settle(self, task_id: str, ready: list[str], finished: list[str]) -> None:
        """Decide one pending task: queue it, skip it, fail it, or leave it waiting."""
        decision = self._decide(task_id)
        if decision is Decision.WAIT:
            return
        if decision is Decision.RUN:
            holds, why = self._condition_holds(task_id)
            if holds:
                self.states[task_id].status = Status.QUEUED
                ready.append(task_id)
                return
            self._finish(task_id, Status.SKIPPED, self.clock(), error=why)
        elif decision is Decision.SKIP:
            self._finish(task_id, Status.SKIPPED, self.clock(), error="skipped by trigger rule")
        else:
            self._finish(
                task_id, Status.UPSTREAM_FAILED, self.clock(), error="an upstream task failed"
            )
        finished.append(task_id)

    def _propagate(self, finished: Sequence[str]) -> list[str]:
        """Settle the dependents of tasks that just finished, transitively."""
        ready: list[str] = []
        work = list(finished)
        while work:
            task_id = work.pop()
            for down in self.execution_graph.downstreams(task_id):
                if self.states[down].status == Status.PENDING:
                    self._settle(down, ready, work)
        return ready
