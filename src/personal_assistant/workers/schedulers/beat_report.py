"""What operators see of the beat schedule: one row per entry and who holds the lock.

Read by ``celery ... schedule list`` and by beat's /metrics (beat_exports.py), from the
catalogue (declared and added entries, checked) and the run state in Redis, in one pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from personal_assistant.workers import keys
from personal_assistant.workers.schedulers.beat_catalogue import Catalogue
from personal_assistant.workers.schedulers.beat_lock import parse_lock_value
from personal_assistant.workers.schedulers.run_claims import entry_key


@dataclass(frozen=True)
class EntryRow:
    """One entry as operators see it. ``state`` is ``enabled``, ``disabled`` or ``invalid``
    (then ``problem`` says why); times are Unix seconds, None when unknown."""

    name: str
    state: str
    source: str  # "declared" (in code) or "added" (schedule add)
    target: str  # the task, or "workflow <name>"
    schedule: str
    queue: str | None
    last_run: float | None
    next_run: float | None
    run_count: int
    skips: dict[str, int] = field(default_factory=dict)
    last_skip: str | None = None
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The row as JSON-ready data (``schedule list --json``)."""
        return asdict(self)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _float(value: bytes | str | None) -> float | None:
    text = _text(value)
    return float(text) if text else None


def lock_holder(client: redis.Redis) -> str | None:
    """The owner of the beat lock now (``host:pid:suffix``), None when no beat holds it."""
    value: bytes | str | None = client.get(keys.BEAT_LOCK_KEY)
    return None if value is None else parse_lock_value(value)[1]


def entry_rows(client: redis.Redis, catalogue: Catalogue) -> list[EntryRow]:
    """Every entry of ``catalogue`` (invalid ones too), by name, with its run state."""
    names = sorted(set(catalogue.entries) | set(catalogue.problems))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(entry_key(name))
        pipe.zscore(keys.BEAT_DUE_KEY, name)
    replies = pipe.execute()
    rows = []
    for index, name in enumerate(names):
        raw = cast("Mapping[bytes | str, bytes | str]", replies[2 * index])
        fields = {_text(k) or "": v for k, v in raw.items()}
        score = cast("float | None", replies[2 * index + 1])
        entry = catalogue.entries.get(name)
        if entry is None:
            state, target, schedule, queue = "invalid", "", "", None
        else:
            state = "disabled" if name in catalogue.disabled else "enabled"
            target = (
                f"workflow {entry.workflow.get('name', name)}" if entry.workflow else entry.task
            )
            schedule, queue = entry.describe_schedule(), entry.queue
        skips = {
            key.removeprefix("skips:"): int(_text(value) or 0)
            for key, value in fields.items()
            if key.startswith("skips:")
        }
        rows.append(
            EntryRow(
                name=name,
                state=state,
                source="added" if name in catalogue.added else "declared",
                target=target,
                schedule=schedule,
                queue=queue,
                last_run=_float(fields.get("last_run")),
                next_run=float(score) if score is not None and state == "enabled" else None,
                run_count=int(_text(fields.get("run_count")) or 0),
                skips=skips,
                last_skip=_text(fields.get("last_skip")),
                problem=catalogue.problems.get(name),
            )
        )
    return rows
