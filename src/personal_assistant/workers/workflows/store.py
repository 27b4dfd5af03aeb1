"""How a workflow's state lives in Redis, and the lazily loaded, versioned view of it.

The keys are keys.py's (which also says how long they live):

- ``keys.workflow_definition_key(id)``  the validated definition (JSON, immutable after submit);
- ``keys.workflow_meta_key(id)``        hash: name, state, created_at, started_at, ended_at,
                                        ``tasks`` (how many) and two counters, ``remaining``
                                        (tasks not final) and ``failed_leaves``;
- ``keys.workflow_task_key(id, task)``  hash per task: status, error, result, started_at,
                                        ended_at and the tally of its upstreams' outcomes (each
                                        field a JSON value), and ``v``, its version, bumped by
                                        every committed change;
- ``keys.WORKFLOWS_OPEN_KEY``           set of the workflows still running (swept for timeouts);
- ``keys.WORKFLOWS_INDEX_KEY``, ``keys.WORKFLOWS_EXPIRING_KEY``: the workflows by creation time
                                        and their expiry (index.py, for ``workflow list``).

One hash per task means a transition validates only the tasks it reads (commit.py): the
task that ended, its dependents and the upstreams a condition names. Two upstream ends conflict
only when they share a dependent, which is exactly when one of them must see the other's write.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, MutableMapping
from typing import Any, cast

import redis

from personal_assistant.workers import keys
from personal_assistant.workers.workflows.state_machine import TaskState

VERSION_FIELD = "v"
STATE_FIELDS = ("status", "error", "result", "started_at", "ended_at", "upstream_outcomes")


def encode_state(state: TaskState) -> dict[str, str]:
    """A task state as hash fields (each a JSON value)."""
    return {
        "status": json.dumps(str(state.status)),
        "error": json.dumps(state.error),
        "result": json.dumps(state.result, default=repr),
        "started_at": json.dumps(state.started_at),
        "ended_at": json.dumps(state.ended_at),
        "upstream_outcomes": json.dumps(state.upstream_outcomes),
    }


def submitted_row(state: TaskState) -> dict[str, str]:
    """The row a submit writes for a task: its state, at version "0" while it is still the
    state every task has before the start (:data:`PRISTINE_ROW`), else at version "1".

    So while a row's version is "0", any process knows the row without reading it.
    """
    row = encode_state(state)
    row[VERSION_FIELD] = "0" if row == _PRISTINE_STATE else "1"
    return row


_PRISTINE_STATE: dict[str, str] = encode_state(TaskState())
#: The stored row of a task nothing has happened to yet (see submitted_row).
PRISTINE_ROW: dict[str, str] = {**_PRISTINE_STATE, VERSION_FIELD: "0"}


def is_row(value: Any) -> bool:
    """True when ``value`` has the shape of a stored row (a message header carries one)."""
    return (
        isinstance(value, dict)
        and set(value) == {*STATE_FIELDS, VERSION_FIELD}
        and all(isinstance(v, str) for v in value.values())
        and value[VERSION_FIELD].isdigit()
    )


def decode_state(fields: dict[bytes, bytes]) -> TaskState:
    """The task state stored as hash fields."""
    return _state_of_text({k.decode(): v.decode() for k, v in fields.items()})


def _state_of_text(row: dict[str, str]) -> TaskState:
    return TaskState(**{k: json.loads(v) for k, v in row.items() if k in STATE_FIELDS})


def _read_rows(
    client: redis.Redis, workflow_id: str, task_ids: Collection[str]
) -> list[dict[bytes, bytes]]:
    with client.pipeline(transaction=False) as batch:
        for task_id in task_ids:
            batch.hgetall(keys.workflow_task_key(workflow_id, task_id))
        return cast(list[dict[bytes, bytes]], batch.execute())


def read_states(
    client: redis.Redis, workflow_id: str, task_ids: Collection[str]
) -> dict[str, TaskState]:
    """Every named task's state, in one round trip (unversioned: for reports)."""
    rows = _read_rows(client, workflow_id, task_ids)
    return {tid: decode_state(row) for tid, row in zip(task_ids, rows, strict=True) if row}


class VersionedStates(MutableMapping[str, TaskState]):
    """Task states read on first use, each with the version it had when read.

    The scheduler mutates the returned TaskState objects in place; :meth:`changes` then gives
    the fields to write, :meth:`versions` what the commit must find unchanged, and
    :meth:`newly_final` the tasks that became final.
    """

    def __init__(
        self,
        client: redis.Redis,
        workflow_id: str,
        task_ids: Collection[str],
        terminal: Collection[str],
    ) -> None:
        self._client = client
        self._workflow_id = workflow_id
        self._ids = task_ids
        self._terminal = terminal
        self._loaded: dict[str, TaskState] = {}
        self._before: dict[str, dict[str, str]] = {}  # each read task's fields, as stored
        self._strict: set[str] = set()  # tasks taken as pristine without a read

    def preload(self, task_ids: list[str]) -> None:
        """Read these tasks now, in one round trip."""
        self._load([t for t in task_ids if t in self._ids])

    def seed(self, rows: dict[str, dict[bytes, bytes]]) -> None:
        """Take these tasks' rows as read (fetched with the definition, in its round trip)."""
        wanted = [t for t in rows if t in self._ids and t not in self._loaded]
        self._accept(wanted, [rows[t] for t in wanted])

    def expect(self, rows: dict[str, dict[str, str]], *, pristine: Collection[str] = ()) -> None:
        """Take these rows as stored without reading them: a row a message carried, or the
        pristine row (``submitted_row``) of the tasks in ``pristine``.

        Only a guess: the commit checks each one's version, and for a pristine one that the
        version field exists at all, so a wrong guess is a conflict, read again, never a
        wrong decision.
        """
        for task_id, row in rows.items():
            if task_id in self._ids and task_id not in self._loaded:
                self._take(task_id, dict(row))
                if task_id in pristine:
                    self._strict.add(task_id)

    def _load(self, task_ids: list[str]) -> None:
        wanted = [t for t in task_ids if t not in self._loaded]
        if not wanted:
            return
        self._accept(wanted, _read_rows(self._client, self._workflow_id, wanted))

    def _accept(self, wanted: list[str], rows: list[dict[bytes, bytes]]) -> None:
        missing = [t for t, row in zip(wanted, rows, strict=True) if not row]
        if missing:
            raise KeyError(f"workflow {self._workflow_id}: no state for {missing}")
        for task_id, row in zip(wanted, rows, strict=True):
            self._take(task_id, {k.decode(): v.decode() for k, v in row.items()})

    def _take(self, task_id: str, row: dict[str, str]) -> None:
        self._loaded[task_id] = _state_of_text(row)
        # The stored text is what encode_state wrote (json.dumps is deterministic), so the diff
        # in changes() compares against it without encoding every field a second time.
        self._before[task_id] = row

    def __getitem__(self, task_id: str) -> TaskState:
        if task_id not in self._loaded:
            if task_id not in self._ids:
                raise KeyError(task_id)
            self._load([task_id])
        return self._loaded[task_id]

    def __setitem__(self, task_id: str, state: TaskState) -> None:
        self._loaded[task_id] = state

    def __delitem__(self, task_id: str) -> None:
        raise TypeError("tasks of a submitted workflow cannot be removed")

    def __iter__(self) -> Iterator[str]:
        self._load(list(self._ids))
        return iter(list(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def versions(self) -> dict[str, str]:
        """Per task read, its key and the version it had (absent counts as "0")."""
        return {
            keys.workflow_task_key(self._workflow_id, t): fields.get(VERSION_FIELD, "0")
            for t, fields in self._before.items()
        }

    def strict_keys(self) -> frozenset[str]:
        """Keys of the rows taken as pristine: the commit requires their version field."""
        return frozenset(keys.workflow_task_key(self._workflow_id, t) for t in self._strict)

    def row_after(self, task_id: str) -> dict[str, str]:
        """The task's row as the commit of the current changes leaves it (version included)."""
        row = dict(self._before[task_id])
        changed = {k: v for k, v in encode_state(self._loaded[task_id]).items() if row.get(k) != v}
        row.update(changed)
        version = int(row.get(VERSION_FIELD, "0"))
        row[VERSION_FIELD] = str(version + 1 if changed else version)
        return row

    def changes(self) -> dict[str, dict[str, str]]:
        """Per task key, the fields whose value changed since they were read."""
        out: dict[str, dict[str, str]] = {}
        for task_id, state in self._loaded.items():
            before = self._before.get(task_id, {})
            changed = {k: v for k, v in encode_state(state).items() if before.get(k) != v}
            if changed:
                out[keys.workflow_task_key(self._workflow_id, task_id)] = changed
        return out

    def newly_final(self) -> list[str]:
        """Tasks that were not final when read and are now."""
        return [
            t
            for t, s in self._loaded.items()
            if s.status in self._terminal
            and json.loads(self._before[t]["status"]) not in self._terminal
        ]


def meta_of(client: redis.Redis, workflow_id: str) -> dict[str, Any]:
    """The workflow's meta fields, decoded (empty when it does not exist)."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.workflow_meta_key(workflow_id)))
    return {k.decode(): json.loads(v) for k, v in raw.items()}
