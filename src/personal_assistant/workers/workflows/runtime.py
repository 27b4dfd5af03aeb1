"""The Redis-backed workflow runtime: submit, advance on task ends, time out, cancel, inspect.

Each state change is one optimistic transaction: the task states it reads carry versions
(store.py), the change is computed by the same :class:`DependencyScheduler` the in-memory API
uses, and a compare-and-set script commits it (commit.py). When two upstreams end at the same
moment on two workers, both read their shared dependent, but only one commit succeeds; the
other re-reads, sees the dependent already ``queued`` and does not dispatch it: each dependent
is dispatched exactly once. On a Redis broker the commit also pushes the
ready tasks' messages; elsewhere the winner publishes after its commit, and a publish that fails
is recorded as that task's failure, so nothing waits forever on a message that was never sent.

Every ready task is checked against the app's workflow allow-list (``app.workflow_policy``,
policy.py) in the same decision, before its message is built: one the list refuses (a definition
stored before the list or the settings changed) is recorded as failed instead of published, and
the workflow goes on by its trigger rules to its end. Every function is handed the app it works
for: its settings, policy, broker and Redis.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

import redis

from personal_assistant.workers import keys
from personal_assistant.workers.config import is_redis_url, state_redis_url
from personal_assistant.workers.metrics.domain_series import WORKFLOWS_ENDED, domain_field
from personal_assistant.workers.redis_clients import client_for
from personal_assistant.workers.workflows import commit as workflow_commit
from personal_assistant.workers.workflows import index, outbox, store
from personal_assistant.workers.workflows.definition import (
    WorkflowDefinition,
    parse_and_build,
)
from personal_assistant.workers.workflows.inputs import describe
from personal_assistant.workers.workflows.link import advance_link
from personal_assistant.workers.workflows.policy import WorkflowTaskPolicy
from personal_assistant.workers.workflows.state_machine import DependencyScheduler
from personal_assistant.workers.workflows.trigger_rules import FAILED_LIKE, TERMINAL, Status

if TYPE_CHECKING:
    from personal_assistant.workers.worker_app import WorkerApp

logger = logging.getLogger(__name__)

# Finished workflows stay inspectable for a week, then Redis (noeviction) reclaims the space.
FINISHED_TTL_S = 7 * 86_400
# Results feed conditions and are read with their task; a huge one is replaced by a marker.
MAX_STORED_RESULT_CHARS = 65_536
HEADER_WORKFLOW = keys.WORKFLOW_HEADER
HEADER_TASK = keys.WORKFLOW_TASK_HEADER
# The task's dependents, so the process that records its end can read their states in the same
# round trip as the definition the first time it meets the workflow (one round trip less).
# Left out past MAX_HINTED_DEPENDENTS: a wide fan-out would make every message carry the list.
HEADER_NEXT = keys.WORKFLOW_NEXT_HEADER
HEADER_ROW = keys.WORKFLOW_ROW_HEADER
MAX_HINTED_DEPENDENTS = 32
TIMEOUT_TASK = "personal_assistant.workers.tasks.maintenance_tasks.check_workflow_timeouts"
_CELERY_ID_NAMESPACE = uuid.UUID("6f1c1f1e-2b1a-4c54-9d9e-7d5c2c0e4a11")


class WorkflowNotFound(KeyError):
    """No workflow has that id (never submitted, or expired)."""


def celery_task_id(workflow_id: str, task_id: str) -> str:
    """The Celery id of a workflow task: derived, so status and cancel need no lookup."""
    return str(uuid.uuid5(_CELERY_ID_NAMESPACE, f"{workflow_id}/{task_id}"))


def redis_for(app: WorkerApp) -> redis.Redis:
    """The Redis client workflows of ``app`` live in (the broker's, else the backend's)."""
    return client_for(state_redis_url(str(app.conf.broker_url), str(app.conf.result_backend)))


def refuse_disallowed(
    workflow_id: str,
    ready: list[str],
    definition: WorkflowDefinition,
    scheduler: DependencyScheduler,
    policy: WorkflowTaskPolicy,
) -> list[str]:
    """The ready tasks ``policy`` allows; each refused one is recorded as failed instead (and
    what that makes ready is checked in turn), so the workflow ends rather than waits."""
    allowed: list[str] = []
    pending = list(ready)
    while pending:
        task_id = pending.pop(0)
        name = definition.tasks[task_id].task
        reason = policy.refusal(name)
        if reason is None:
            allowed.append(task_id)
            continue
        error = f"not dispatched: task {describe(name)} may not run in a workflow: {reason}"
        logger.error("workflow %s: %s: %s", workflow_id, task_id, error)
        pending += scheduler.record_status(task_id, Status.FAILED, error=error)
    return allowed


_Built = tuple[WorkflowDefinition, DependencyScheduler, frozenset[str]]


class _SchedulerCache:
    """Built graphs, and their leaves, per workflow in this process (definitions never change
    after submit)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: dict[str, _Built] = {}

    def get_with_rows(
        self, client: redis.Redis, workflow_id: str, task_ids: list[str]
    ) -> tuple[_Built, dict[str, dict[bytes, bytes]]]:
        """The built graph, and, when it had to be read, these tasks' rows read with it."""
        item = self._items.get(workflow_id)
        if item is not None:
            return item, {}
        with client.pipeline(transaction=False) as batch:
            batch.get(keys.workflow_definition_key(workflow_id))
            for task_id in task_ids:
                batch.hgetall(keys.workflow_task_key(workflow_id, task_id))
            raw, *rows = batch.execute()
        if raw is None:
            raise WorkflowNotFound(workflow_id)
        definition = WorkflowDefinition.from_json(cast(bytes, raw))
        scheduler = definition.build_scheduler()
        item = (definition, scheduler, frozenset(scheduler.leaves()))
        if len(self._items) >= self.size:
            self._items.pop(next(iter(self._items)), None)
        self._items[workflow_id] = item
        return item, {t: row for t, row in zip(task_ids, rows, strict=True) if row}


_cache = _SchedulerCache()


def transition(
    client: redis.Redis,
    workflow_id: str,
    change: Callable[[DependencyScheduler], list[str]],
    *,
    app: WorkerApp,
    end_as: str | None = None,
    preload: Callable[[DependencyScheduler], list[str]] | None = None,
    hint: list[str] | None = None,
    carried: tuple[str, dict[str, str]] | None = None,
) -> tuple[list[str], DependencyScheduler, WorkflowDefinition]:
    """Apply ``change`` atomically; return (tasks still to dispatch, scheduler, definition).

    Ready tasks ``app.workflow_policy`` refuses are recorded as failed instead. On a Redis
    broker (``app.workflow_outbox``), the ready tasks' messages are pushed by the same commit
    (outbox.py) and the returned list is empty; otherwise the caller dispatches them.
    ``preload`` names the tasks to read in the first round trip; ``end_as`` names the final
    state if this change ends the workflow (``cancelled``). ``hint`` names tasks to read with
    the definition if this process has not built the workflow yet (what ``preload`` will ask).
    ``carried`` is (task id, row) from the message of the task whose end this records: with it,
    the first attempt takes that row and its single-upstream dependents' pristine rows as
    stored instead of reading them (the commit checks their versions: a wrong guess conflicts).
    """
    (definition, built, leaves), seed = _cache.get_with_rows(client, workflow_id, hint or [])
    # A shallow copy per call: the graph, rules and conditions are shared (never change after
    # submit), while each call gets its own `states`, so threads never see each other's reads.
    scheduler = copy.copy(built)
    captured: dict[str, outbox.CapturedPublish] = {}
    use_outbox = app.workflow_outbox
    policy = app.workflow_policy
    while True:
        states = store.VersionedStates(client, workflow_id, definition.tasks, TERMINAL)
        scheduler.states = states
        if seed:
            states.seed(seed)  # read with the definition: only valid for the first attempt
            seed = {}
        elif carried is not None:
            _expect_unread(states, built, *carried)
        carried = None  # a conflict means a guess was wrong: later attempts read
        if preload is not None:
            states.preload(preload(scheduler))
        ready = refuse_disallowed(workflow_id, change(scheduler), definition, scheduler, policy)
        if use_outbox:
            for task_id in ready:
                if task_id not in captured:  # built once per attempt that commits
                    captured[task_id] = _capture(
                        app, workflow_id, task_id, definition, built, row=states.row_after(task_id)
                    )
        final = states.newly_final()
        step = workflow_commit.Commit(
            meta_key=keys.workflow_meta_key(workflow_id),
            checks=list(states.versions().items()),
            strict=states.strict_keys(),
            writes=states.changes(),
            publishes=[cmd for t in ready for cmd in captured[t].commands] if use_outbox else [],
            final=len(final),
            failed_leaves=sum(t in leaves and states[t].status in FAILED_LIKE for t in final),
        )
        try:
            counters = workflow_commit.commit(client, step)
        except workflow_commit.ConflictError:
            # Someone changed what we read: read again and decide again. The messages carry
            # their task's row as this commit would have left it, so they are built again.
            captured.clear()
            continue
        if use_outbox:
            for task_id in ready:
                outbox.signal_published(app, captured[task_id])
        if counters is not None and counters[0] == 0:
            _end(
                client,
                workflow_id,
                definition,
                end_as or ("failed" if counters[1] > 0 else "completed"),
            )
        return ([] if use_outbox else ready), scheduler, definition


def _expect_unread(
    states: store.VersionedStates, built: DependencyScheduler, task_id: str, row: dict[str, str]
) -> None:
    """Take the ended task's carried row, and the pristine rows of the dependents only it
    feeds, as stored: in a chain or a fan-out, the commit is then the hop's one round trip."""
    graph = built.execution_graph
    only_fed = [d for d in graph.downstreams(task_id) if graph.upstream_count(d) == 1]
    rows = {task_id: row, **dict.fromkeys(only_fed, store.PRISTINE_ROW)}
    states.expect(rows, pristine=only_fed)


def _capture(
    app: WorkerApp,
    workflow_id: str,
    task_id: str,
    definition: WorkflowDefinition,
    scheduler: DependencyScheduler,
    *,
    row: dict[str, str],
) -> outbox.CapturedPublish:
    spec = definition.tasks[task_id]
    return outbox.capture(
        app,
        spec.task,
        spec.args,
        spec.kwargs,
        task_id=celery_task_id(workflow_id, task_id),
        headers=_headers(workflow_id, task_id, scheduler, row),
        options=spec.options,
        link=[advance_link()],
    )


def _headers(
    workflow_id: str, task_id: str, scheduler: DependencyScheduler, row: dict[str, str]
) -> dict[str, Any]:
    headers: dict[str, Any] = {
        HEADER_WORKFLOW: workflow_id,
        HEADER_TASK: task_id,
        HEADER_ROW: row,
    }
    dependents = scheduler.execution_graph.downstreams(task_id)
    if len(dependents) <= MAX_HINTED_DEPENDENTS:
        headers[HEADER_NEXT] = list(dependents)
    return headers


def _end(client: redis.Redis, workflow_id: str, definition: WorkflowDefinition, state: str) -> None:
    """Close a workflow: its last task just became final (only one transaction sees that)."""
    now = time.time()
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(
            keys.workflow_meta_key(workflow_id),
            mapping={"state": json.dumps(state), "ended_at": json.dumps(now)},
        )
        pipe.srem(keys.WORKFLOWS_OPEN_KEY, workflow_id)
        # Counted here, in the one transaction that sees the end: once per workflow, exactly.
        pipe.hincrby(keys.METRICS_DOMAIN_KEY, domain_field(WORKFLOWS_ENDED, state), 1)
        for key in (
            keys.workflow_definition_key(workflow_id),
            keys.workflow_meta_key(workflow_id),
            *(keys.workflow_task_key(workflow_id, t) for t in definition.tasks),
        ):
            pipe.expire(key, FINISHED_TTL_S)
        index.record_end(pipe, workflow_id, now + FINISHED_TTL_S)  # leaves the index with them
        pipe.execute()
    logger.info("workflow %s %s", workflow_id, state)


def _row_of(scheduler: DependencyScheduler, task_id: str) -> dict[str, str]:
    """The task's row as stored after the commit that made it ready (or the submit)."""
    states = scheduler.states
    if isinstance(states, store.VersionedStates):
        return states.row_after(task_id)
    return store.submitted_row(states[task_id])


def dispatch(
    app: WorkerApp,
    workflow_id: str,
    ready: list[str],
    definition: WorkflowDefinition,
    scheduler: DependencyScheduler,
) -> None:
    """Publish the ready tasks; a publish that fails is recorded as that task's failure.

    Each at the priority the commit's own messages get (outbox.routed_priority), named
    explicitly: ``send_task`` would otherwise take the registered task's default over the
    queue's.
    """
    for task_id in ready:
        spec = definition.tasks[task_id]
        try:
            options = dict(spec.options)
            priority = outbox.routed_priority(app, spec.task, spec.args, spec.kwargs, options)
            if priority is not None:
                options["priority"] = priority
            app.send_task(
                spec.task,
                args=spec.args,
                kwargs=spec.kwargs,
                task_id=celery_task_id(workflow_id, task_id),
                headers=_headers(workflow_id, task_id, scheduler, _row_of(scheduler, task_id)),
                link=advance_link(),
                **options,
            )
        except Exception as exc:
            logger.exception("workflow %s: could not dispatch %s", workflow_id, task_id)
            record_task_event(
                app, workflow_id, task_id, Status.FAILED, error=f"dispatch failed: {exc}"
            )


def known_task_names(app: WorkerApp) -> set[str]:
    """Names of the Celery tasks registered in ``app`` (after importing its task modules)."""
    app.loader.import_default_modules()
    return set(app.tasks.keys())


def submit_workflow(
    definition: Mapping[str, Any], *, app: WorkerApp, workflow_id: str | None = None
) -> str:
    """Validate ``definition`` whole, store it, dispatch its roots; return the workflow id.

    ``workflow_id`` (beat's periodic workflows) makes the submission idempotent: a workflow
    that already has this id is left as it is and its id returned, so a run re-published after
    a beat died mid-publish starts one workflow, not two.

    Raises WorkflowValidationError (and stores and dispatches nothing) when it is invalid: a
    task that is not registered or not allowed in workflows (``app.workflow_policy``), a definition
    over ``WORKFLOW_MAX_DEFINITION_BYTES`` as JSON or a task's arguments over
    ``WORKFLOW_MAX_ARGS_BYTES``, values JSON cannot hold, and every other problem.
    """
    policy = app.workflow_policy
    parsed, scheduler = parse_and_build(
        definition, known_tasks=known_task_names(app), policy=policy
    )
    client = redis_for(app)
    if workflow_id is not None:
        if client.exists(keys.workflow_definition_key(workflow_id)):
            return workflow_id
    else:
        workflow_id = uuid.uuid4().hex
    now = time.time()
    # Nobody else knows this workflow yet: no WATCH needed.
    ready = refuse_disallowed(workflow_id, scheduler.start(now), parsed, scheduler, policy)
    leaves = set(scheduler.leaves())
    remaining = sum(s.status not in TERMINAL for s in scheduler.states.values())
    failed_leaves = sum(scheduler.states[t].status in FAILED_LIKE for t in leaves)
    meta = {
        "name": parsed.name,
        "state": "running",
        "created_at": now,
        "started_at": now,
        "ended_at": None,
        "tasks": len(parsed.tasks),
        "remaining": remaining,
        "failed_leaves": failed_leaves,
    }
    with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.workflow_definition_key(workflow_id), parsed.to_json())
        pipe.hset(
            keys.workflow_meta_key(workflow_id), mapping={k: json.dumps(v) for k, v in meta.items()}
        )
        for task_id, state in scheduler.states.items():
            row = store.submitted_row(state)
            pipe.hset(keys.workflow_task_key(workflow_id, task_id), mapping=row)  # type: ignore[arg-type]
        pipe.sadd(keys.WORKFLOWS_OPEN_KEY, workflow_id)
        index.record_submit(pipe, workflow_id, now)  # listed exactly when its keys exist
        pipe.execute()
    if remaining == 0:  # every task skipped at once (false conditions on the roots)
        _end(client, workflow_id, parsed, "failed" if failed_leaves else "completed")
    dispatch(app, workflow_id, ready, parsed, scheduler)
    _schedule_timeout_checks(app, workflow_id, parsed)
    logger.info(
        "workflow %s (%s) submitted: %d tasks, %d ready",
        workflow_id,
        parsed.name,
        len(parsed.tasks),
        len(ready),
    )
    return workflow_id


def _schedule_timeout_checks(
    app: WorkerApp, workflow_id: str, definition: WorkflowDefinition
) -> None:
    """Ask for a timeout check when each timeout falls due (the periodic sweep backs it up)."""
    delays = {t.timeout for t in definition.tasks.values() if t.timeout}
    if definition.deadline:
        delays.add(definition.deadline)
    limit = app.settings.max_countdown
    for delay in sorted(d for d in delays if d is not None and d <= limit):
        app.send_task(TIMEOUT_TASK, args=[workflow_id], countdown=delay + 0.05)


def record_task_event(
    app: WorkerApp,
    workflow_id: str,
    task_id: str,
    status: str,
    *,
    result: Any = None,
    error: str | None = None,
    started_at: float | None = None,
    dependents: list[str] | None = None,
    row: Any = None,
) -> None:
    """Record one task's end; its dependents that became ready are published with it.

    ``dependents``: the task's dependents as its message named them (``HEADER_NEXT``), read
    with the definition when this process meets the workflow for the first time. ``row``: the
    task's row as its message carried it (``HEADER_ROW``), used instead of a read when it has a
    row's shape (anything else is ignored: the row is then read).
    """
    stored = result
    if result is not None and len(json.dumps(result, default=repr)) > MAX_STORED_RESULT_CHARS:
        stored = {"_truncated": True}
    ready, scheduler, definition = transition(
        redis_for(app),
        workflow_id,
        lambda s: s.record_status(task_id, status, stored, error=error, started_at=started_at),
        preload=lambda s: [task_id, *s.execution_graph.downstreams(task_id)],
        hint=None if dependents is None else [task_id, *dependents],
        carried=(task_id, row) if store.is_row(row) else None,
        app=app,
    )
    dispatch(app, workflow_id, ready, definition, scheduler)


def check_timeouts(app: WorkerApp, workflow_id: str) -> list[str]:
    """Time out what waited too long in one workflow (revoking what was already sent),
    publish what became ready; return the tasks that timed out."""
    client = redis_for(app)
    meta = store.meta_of(client, workflow_id)
    if not meta:
        raise WorkflowNotFound(workflow_id)
    if meta.get("state") != "running":
        return []
    timed_out: list[str] = []
    sent: set[str] = set()

    def expire(scheduler: DependencyScheduler) -> list[str]:
        still_open = {t for t, s in scheduler.states.items() if s.status not in TERMINAL}
        sent.clear()
        sent.update(t for t in still_open if scheduler.states[t].status == Status.QUEUED)
        scheduler.started_at = float(meta["started_at"])
        ready = scheduler.check_timeouts()
        timed_out[:] = [t for t in still_open if scheduler.states[t].status == Status.TIMED_OUT]
        return ready

    ready, scheduler, definition = transition(client, workflow_id, expire, app=app)
    dispatch(app, workflow_id, ready, definition, scheduler)
    revoked = [celery_task_id(workflow_id, t) for t in timed_out if t in sent]
    if revoked:
        app.control.revoke(revoked)
    return timed_out


def sweep_open_workflows(app: WorkerApp) -> int:
    """Check timeouts of every open workflow (the periodic backstop); return how many."""
    client = redis_for(app)
    ids = [m.decode() for m in cast(set[bytes], client.smembers(keys.WORKFLOWS_OPEN_KEY))]
    for workflow_id in ids:
        try:
            check_timeouts(app, workflow_id)
        except WorkflowNotFound:
            client.srem(keys.WORKFLOWS_OPEN_KEY, workflow_id)
    return len(ids)


def cancel_workflow(workflow_id: str, *, app: WorkerApp, terminate: bool = False) -> int:
    """Cancel every unfinished task (revoking queued and running ones); return how many."""
    client = redis_for(app)
    if not store.meta_of(client, workflow_id):
        raise WorkflowNotFound(workflow_id)
    cancelled: list[str] = []

    def cancel(scheduler: DependencyScheduler) -> list[str]:
        cancelled[:] = scheduler.cancel()
        return []

    transition(client, workflow_id, cancel, app=app, end_as="cancelled")
    if cancelled:
        app.control.revoke([celery_task_id(workflow_id, t) for t in cancelled], terminate=terminate)
    return len(cancelled)


def workflow_status(workflow_id: str, *, app: WorkerApp) -> dict[str, Any]:
    """The workflow's state, name and times, and each task's status, times, error and result."""
    client = redis_for(app)
    meta = store.meta_of(client, workflow_id)
    raw_def = client.get(keys.workflow_definition_key(workflow_id))
    if not meta or raw_def is None:
        raise WorkflowNotFound(workflow_id)
    definition = WorkflowDefinition.from_json(cast(bytes, raw_def))
    states = store.read_states(client, workflow_id, list(definition.tasks))
    running = _started_in_celery(
        app, workflow_id, [t for t, s in states.items() if s.status == Status.QUEUED]
    )
    tasks: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for task_id, state in states.items():
        info = asdict(state)
        info.pop("upstream_outcomes")
        info["status"] = Status.RUNNING.value if task_id in running else str(state.status)
        tasks[task_id] = {
            **info,
            "duration": state.duration,
            "task": definition.tasks[task_id].task,
            "celery_id": celery_task_id(workflow_id, task_id),
        }
        counts[info["status"]] = counts.get(info["status"], 0) + 1
    return {
        "id": workflow_id,
        "name": definition.name,
        "state": meta.get("state"),
        "created_at": meta.get("created_at"),
        "ended_at": meta.get("ended_at"),
        "counts": counts,
        "tasks": tasks,
    }


def _started_in_celery(app: WorkerApp, workflow_id: str, queued: list[str]) -> set[str]:
    """Which queued tasks Celery's result backend says have started (STARTED)."""
    if not queued:
        return set()
    backend = app.backend
    get_key = getattr(backend, "get_key_for_task", None)
    if get_key is None or not is_redis_url(str(app.conf.result_backend)):
        return set()
    keys = [get_key(celery_task_id(workflow_id, t)) for t in queued]
    raws = backend.client.mget(keys)
    return {
        t
        for t, raw in zip(queued, raws, strict=True)
        if raw is not None and json.loads(raw).get("status") == "STARTED"
    }
