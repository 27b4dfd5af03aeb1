"""The Redis-backed workflow runtime: submit, advance on task ends, time out, cancel, inspect.

Layout in Redis (db of the broker, or of the result backend when the broker is not Redis):

- ``pa:wf:<id>:def``   the validated definition (JSON, immutable);
- ``pa:wf:<id>:state`` a hash: one field per task (JSON TaskState + Celery id) and ``~wf``
  for the workflow itself (state, created/ended times);
- ``pa:wf:open``       the set of workflows still running, swept for timeouts.

Every state change is one optimistic transaction (WATCH the state hash, compute the change with
the same :class:`DependencyScheduler` the in-memory API uses, MULTI/EXEC). When two upstreams
finish at once on two workers, both read the same state but only one EXEC succeeds; the other
re-reads, sees the dependent already ``queued``, and does not dispatch it: each dependent is
dispatched exactly once. The winner publishes after its EXEC; a failed publish is recorded as
the task's failure, so nothing waits forever on a message never sent.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, cast

import redis

from personal_assistant.workers.schedulers.dependency_scheduler import (
    DependencyScheduler,
    TaskState,
)
from personal_assistant.workers.schedulers.trigger_rules import TERMINAL, Status
from personal_assistant.workers.schedulers.workflow_definition import (
    WorkflowDefinition,
    parse_definition,
)

logger = logging.getLogger(__name__)

WORKFLOW_FIELD = "~wf"  # not a valid task id, so it never collides with one
OPEN_KEY = "pa:wf:open"
# Finished workflows stay inspectable for a week, then Redis (noeviction) reclaims the space.
FINISHED_TTL_S = 7 * 86_400
# Results feed conditions; a huge one would be copied on every state read, so it is cut.
MAX_STORED_RESULT_CHARS = 65_536
HEADER_WORKFLOW = "pa_workflow"
HEADER_TASK = "pa_workflow_task"
_CELERY_ID_NAMESPACE = uuid.UUID("6f1c1f1e-2b1a-4c54-9d9e-7d5c2c0e4a11")


class WorkflowNotFound(KeyError):
    """No workflow has that id (never submitted, or expired)."""


def def_key(workflow_id: str) -> str:
    """Key of the stored definition."""
    return f"pa:wf:{workflow_id}:def"


def state_key(workflow_id: str) -> str:
    """Key of the state hash."""
    return f"pa:wf:{workflow_id}:state"


def celery_task_id(workflow_id: str, task_id: str) -> str:
    """The Celery id of a workflow task: derived, so a redelivered dispatch keeps its id."""
    return str(uuid.uuid5(_CELERY_ID_NAMESPACE, f"{workflow_id}/{task_id}"))


def _default_app() -> Any:
    from personal_assistant.workers.celery_app import app

    return app


def redis_for(app: Any) -> redis.Redis:
    """The Redis client workflows of ``app`` live in."""
    client = getattr(app, "_workflow_redis", None)
    if client is None:
        url = str(app.conf.broker_url)
        if not url.startswith("redis"):
            url = str(app.conf.result_backend)
        client = redis.Redis.from_url(url, socket_timeout=10)
        app._workflow_redis = client
    return cast(redis.Redis, client)


def _encode_state(state: TaskState) -> str:
    data = asdict(state)
    data["status"] = str(state.status)
    return json.dumps(data, default=repr)


def _decode_state(raw: bytes | str) -> TaskState:
    return TaskState(**json.loads(raw))


class _SchedulerCache:
    """Built graphs per workflow in this process (definitions never change after submit)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: dict[str, tuple[WorkflowDefinition, DependencyScheduler]] = {}

    def get(
        self, client: redis.Redis, workflow_id: str
    ) -> tuple[WorkflowDefinition, DependencyScheduler]:
        item = self._items.get(workflow_id)
        if item is None:
            raw = client.get(def_key(workflow_id))
            if raw is None:
                raise WorkflowNotFound(workflow_id)
            definition = WorkflowDefinition.from_json(cast(bytes, raw))
            item = (definition, definition.build_scheduler())
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[workflow_id] = item
        return item


_cache = _SchedulerCache()


def transition(
    client: redis.Redis,
    workflow_id: str,
    change: Callable[[DependencyScheduler], list[str]],
    *,
    end_as: str | None = None,
) -> tuple[list[str], DependencyScheduler, WorkflowDefinition]:
    """Apply ``change`` to the workflow's state atomically; return (ready tasks, state, def).

    ``end_as`` names the workflow's final state if this change ends it (``cancelled``).
    """
    definition, scheduler = _cache.get(client, workflow_id)
    key = state_key(workflow_id)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = cast(dict[bytes, bytes], pipe.hgetall(key))
                meta = json.loads(raw.pop(WORKFLOW_FIELD.encode(), b"{}"))
                before = {k.decode(): v.decode() for k, v in raw.items()}
                scheduler.states = {tid: _decode_state(v) for tid, v in before.items()}
                scheduler.started_at = meta.get("started_at")
                if meta.get("state") not in (None, "running"):
                    pipe.unwatch()
                    return [], scheduler, definition  # cancelled or finished: nothing moves
                ready = change(scheduler)
                changed = {
                    tid: enc
                    for tid, state in scheduler.states.items()
                    if (enc := _encode_state(state)) != before.get(tid)
                }
                pipe.multi()
                if changed:
                    pipe.hset(key, mapping=changed)
                state = scheduler.workflow_state()
                if state != "running" and end_as:
                    state = end_as
                if state != "running":
                    meta.update(state=state, ended_at=time.time())
                    pipe.hset(key, WORKFLOW_FIELD, json.dumps(meta))
                    pipe.srem(OPEN_KEY, workflow_id)
                    pipe.expire(key, FINISHED_TTL_S)
                    pipe.expire(def_key(workflow_id), FINISHED_TTL_S)
                pipe.execute()
                return ready, scheduler, definition
            except redis.WatchError:
                continue


def dispatch(app: Any, workflow_id: str, ready: list[str], definition: WorkflowDefinition) -> None:
    """Publish the ready tasks; a publish that fails is recorded as that task's failure."""
    client = redis_for(app)
    for task_id in ready:
        spec = definition.tasks[task_id]
        try:
            app.send_task(
                spec.task,
                args=spec.args,
                kwargs=spec.kwargs,
                task_id=celery_task_id(workflow_id, task_id),
                headers={HEADER_WORKFLOW: workflow_id, HEADER_TASK: task_id},
                **spec.options,
            )
        except Exception as exc:
            logger.exception("workflow %s: could not dispatch %s", workflow_id, task_id)
            more, _, _ = transition(
                client,
                workflow_id,
                lambda s, t=task_id, e=exc: s.record_status(
                    t, Status.FAILED, error=f"dispatch failed: {e}"
                ),
            )
            dispatch(app, workflow_id, more, definition)


def known_task_names(app: Any) -> set[str]:
    """Names of the Celery tasks registered in ``app`` (after importing its task modules)."""
    app.loader.import_default_modules()
    return set(app.tasks.keys())


def submit_workflow(definition: Mapping[str, Any], *, app: Any = None) -> str:
    """Validate ``definition`` whole, store it, dispatch its roots; return the workflow id.

    Raises WorkflowValidationError (and stores and dispatches nothing) when it is invalid.
    """
    app = app or _default_app()
    parsed = parse_definition(definition, known_tasks=known_task_names(app))
    workflow_id = uuid.uuid4().hex
    client = redis_for(app)
    now = time.time()
    scheduler = parsed.build_scheduler()
    meta = {"state": "running", "name": parsed.name, "created_at": now, "started_at": now}
    with client.pipeline(transaction=True) as pipe:
        pipe.set(def_key(workflow_id), parsed.to_json())
        pipe.hset(
            state_key(workflow_id),
            mapping={
                WORKFLOW_FIELD: json.dumps(meta),
                **{tid: _encode_state(s) for tid, s in scheduler.states.items()},
            },
        )
        pipe.sadd(OPEN_KEY, workflow_id)
        pipe.execute()
    ready, _, _ = transition(client, workflow_id, lambda s: s.start(now))
    dispatch(app, workflow_id, ready, parsed)
    _schedule_timeout_checks(app, workflow_id, parsed)
    logger.info(
        "workflow %s (%s) submitted: %d tasks, %d ready",
        workflow_id,
        parsed.name,
        len(parsed.tasks),
        len(ready),
    )
    return workflow_id


def _schedule_timeout_checks(app: Any, workflow_id: str, definition: WorkflowDefinition) -> None:
    """Ask for a timeout check when each timeout falls due (the periodic sweep backs it up)."""
    delays = {t.timeout for t in definition.tasks.values() if t.timeout}
    if definition.deadline:
        delays.add(definition.deadline)
    limit = app.settings.max_countdown if hasattr(app, "settings") else 3600
    for delay in sorted(d for d in delays if d is not None and d <= limit):
        app.send_task(
            "personal_assistant.workers.tasks.maintenance_tasks.check_workflow_timeouts",
            args=[workflow_id],
            countdown=delay + 0.05,
        )


# Mark a queued task running without reading the whole workflow: starts are on the hot path.
# Touching the hash also makes concurrent transitions re-read it (their WATCH fires).
_MARK_RUNNING = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local state = cjson.decode(raw)
if state.status ~= 'queued' and state.status ~= 'pending' then return 0 end
state.status = 'running'
state.started_at = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
return 1
"""


def mark_running(app: Any, workflow_id: str, task_id: str, now: float | None = None) -> bool:
    """Record that a workflow task started; False if it is already past that (a redelivery)."""
    client = redis_for(app)
    script = getattr(app, "_workflow_mark_running", None)
    if script is None:
        script = client.register_script(_MARK_RUNNING)
        app._workflow_mark_running = script
    started = time.time() if now is None else now
    return bool(script(keys=[state_key(workflow_id)], args=[task_id, repr(started)]))


def record_task_event(
    app: Any,
    workflow_id: str,
    task_id: str,
    status: str,
    result: Any = None,
    error: str | None = None,
) -> list[str]:
    """Record one task's status change and dispatch what became ready; return those tasks."""
    stored = result
    if result is not None and len(json.dumps(result, default=repr)) > MAX_STORED_RESULT_CHARS:
        stored = {"_truncated": True}
    ready, _, definition = transition(
        redis_for(app), workflow_id, lambda s: s.record_status(task_id, status, stored, error=error)
    )
    dispatch(app, workflow_id, ready, definition)
    return ready


def check_timeouts(app: Any, workflow_id: str) -> list[str]:
    """Time out what waited too long in one workflow; dispatch what became ready."""
    client = redis_for(app)
    before = _open_celery_ids(client, workflow_id)
    ready, scheduler, definition = transition(client, workflow_id, lambda s: s.check_timeouts())
    dispatch(app, workflow_id, ready, definition)
    timed_out = [
        before[t]
        for t, s in scheduler.states.items()
        if s.status == Status.TIMED_OUT and t in before
    ]
    if timed_out:
        app.control.revoke(timed_out)
    return ready


def sweep_open_workflows(app: Any) -> int:
    """Check timeouts of every open workflow (the periodic backstop); return how many."""
    client = redis_for(app)
    ids = [m.decode() for m in cast(set[bytes], client.smembers(OPEN_KEY))]
    for workflow_id in ids:
        try:
            check_timeouts(app, workflow_id)
        except WorkflowNotFound:
            client.srem(OPEN_KEY, workflow_id)
    return len(ids)


def _open_celery_ids(client: redis.Redis, workflow_id: str) -> dict[str, str]:
    raw = cast(dict[bytes, bytes], client.hgetall(state_key(workflow_id)))
    raw.pop(WORKFLOW_FIELD.encode(), None)
    return {
        k.decode(): celery_task_id(workflow_id, k.decode())
        for k, v in raw.items()
        if json.loads(v)["status"] in (Status.QUEUED, Status.RUNNING)
    }


def cancel_workflow(workflow_id: str, *, app: Any = None, terminate: bool = False) -> int:
    """Cancel every unfinished task (revoking queued and running ones); return how many."""
    app = app or _default_app()
    client = redis_for(app)
    to_revoke = _open_celery_ids(client, workflow_id)

    def cancel(scheduler: DependencyScheduler) -> list[str]:
        for state in scheduler.states.values():
            if state.status not in TERMINAL:
                state.status, state.error = Status.CANCELLED, "workflow cancelled"
                state.ended_at = time.time()
        return []

    _, scheduler, _ = transition(client, workflow_id, cancel, end_as="cancelled")
    cancelled = sum(s.error == "workflow cancelled" for s in scheduler.states.values())
    if to_revoke:
        app.control.revoke(list(to_revoke.values()), terminate=terminate)
    return cancelled


def workflow_status(workflow_id: str, *, app: Any = None) -> dict[str, Any]:
    """The workflow's state, name and times, and each task's status, times, error and result."""
    app = app or _default_app()
    client = redis_for(app)
    raw_def = client.get(def_key(workflow_id))
    raw = cast(dict[bytes, bytes], client.hgetall(state_key(workflow_id)))
    if raw_def is None or not raw:
        raise WorkflowNotFound(workflow_id)
    definition = WorkflowDefinition.from_json(cast(bytes, raw_def))
    meta = json.loads(raw.pop(WORKFLOW_FIELD.encode()))
    tasks: dict[str, Any] = {}
    for tid in definition.tasks:
        state = _decode_state(raw[tid.encode()])
        tasks[tid] = {
            **asdict(state),
            "duration": state.duration,
            "task": definition.tasks[tid].task,
            "celery_id": celery_task_id(workflow_id, tid),
        }
    counts: dict[str, int] = {}
    for info in tasks.values():
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
