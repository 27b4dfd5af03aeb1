"""What a dead-letter entry must be before anything reads it as one, or replays it.

A dead-letter entry is input like any other: whoever can write to the state Redis can write
one. So an entry is parsed strictly (every field present with its type, arguments within a size
cap, a failure time a calendar can show) before the queue acts on it, and a replay goes only to
a task this app registers and that writes dead letters, on a queue a worker consumes, at a
priority the broker has. Pure checks: nothing here talks to Redis or Celery.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from personal_assistant.workers import constants as c
from personal_assistant.workers.bounded_yaml import clip_problems, short_repr
from personal_assistant.workers.routing import home_queue

# Arguments larger than the largest message a worker accepts cannot come from a task that ran
# (the fetch dead-letters such a message unread, with empty args), and a replay of them would
# only be dead-lettered again. Measured as the JSON the entry holds, for args and kwargs each.
DLQ_MAX_ARGS_BYTES: Final = c.BROKER_MAX_MESSAGE_BYTES
# A whole entry: both argument lists at their cap, the three clipped text fields (traceback,
# exception, raw) at up to 12 JSON bytes a character (an escaped surrogate pair), and room for
# the short fields. A larger value is not one this package wrote: it is never loaded whole.
DLQ_MAX_ENTRY_BYTES: Final = 2 * DLQ_MAX_ARGS_BYTES + 3 * 12 * c.DLQ_MAX_FIELD_CHARS + 64 * 1024
# Latest failure time shown: datetime cannot show a timestamp past the year 9999.
MAX_FAILED_AT: Final = 253_402_300_799.0
# Values quoted in a problem are cut to this many characters: one line, whatever the entry holds.
QUOTE_CHARS: Final = 60
# Problems listed for one entry; the rest are counted.
MAX_PROBLEMS: Final = 5

# Fields every entry written by this package has. id is optional (the key it is stored under
# says it), and so are the fields with defaults, which older versions did not all write.
REQUIRED_FIELDS: Final = (
    "task_name",
    "task_id",
    "args",
    "kwargs",
    "exception_type",
    "exception",
    "traceback",
    "failed_at",
)


def _is_int(value: object) -> bool:
    # JSON true is a Python bool, which is an int: never a priority or a retry count.
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object) -> str | None:
    return None if isinstance(value, str) else f"must be a string, not {_kind(value)}"


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _task_name(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, not {short_repr(value, QUOTE_CHARS)}"
    return None


def _json_size(value: object) -> int:
    return len(json.dumps(value).encode())


def _args(value: object) -> str | None:
    if not isinstance(value, list):
        return f"must be a list, not {_kind(value)}"
    return _within_cap(value)


def _kwargs(value: object) -> str | None:
    if not isinstance(value, dict):
        return f"must be a mapping, not {_kind(value)}"
    if not all(isinstance(key, str) for key in value):
        return "must have string keys"
    return _within_cap(value)


def _within_cap(value: object) -> str | None:
    try:
        size = _json_size(value)
    except RecursionError:  # parsed, yet too deep to write again: no entry we wrote
        return "is nested too deep"
    if size > DLQ_MAX_ARGS_BYTES:
        return f"is {size} bytes of JSON, over the limit of {DLQ_MAX_ARGS_BYTES}"
    return None


def _optional_int(value: object) -> str | None:
    return None if value is None or _is_int(value) else f"must be an integer, not {_kind(value)}"


def _retries(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"must be a non-negative integer, not {short_repr(value, QUOTE_CHARS)}"
    return None


def _failed_at(value: object) -> str | None:
    # A comparison, not math.isfinite: it refuses NaN and infinities too, and never converts a
    # 4,000-digit integer to a float (OverflowError).
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value <= MAX_FAILED_AT
    ):
        return f"must be a time from 1970 to 9999 in seconds, not {short_repr(value, QUOTE_CHARS)}"
    return None


def _kind(value: object) -> str:
    kinds = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    return "null" if value is None else kinds.get(type(value), f"a {type(value).__name__}")


FIELD_CHECKS: Final[dict[str, Callable[[object], str | None]]] = {
    "task_name": _task_name,
    "task_id": _text,
    "args": _args,
    "kwargs": _kwargs,
    "exception_type": _text,
    "exception": _text,
    "traceback": _text,
    "queue": _optional_text,
    "priority": _optional_int,
    "retries": _retries,
    "hostname": _optional_text,
    "failed_at": _failed_at,
    "id": _text,
    "reason": _optional_text,
    "raw": _optional_text,
}


def _refuse_constant(name: str) -> float:
    # json.loads turns NaN and Infinity into floats by default; no entry we write holds one.
    raise ValueError(f"{name} is not a JSON number")


def parse_entry(raw: str | bytes, key: str | None = None) -> dict[str, Any]:
    """The fields of the entry ``raw``, stored under ``key``, once all of them check out.

    Raises ValueError with one line saying why the entry cannot be read as a dead letter.
    Fields a newer version added are kept (the caller ignores them) and not checked.
    """
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > DLQ_MAX_ENTRY_BYTES:
        raise ValueError(f"{size} bytes, over the limit of {DLQ_MAX_ENTRY_BYTES} for an entry")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("not JSON: nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, invalid UTF-8, a 5,000-digit number, NaN
        raise ValueError(f"not JSON: {short_repr(str(exc), 120, quote=False)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object but {_kind(data)}")
    problems = [f"missing field {name}" for name in REQUIRED_FIELDS if name not in data]
    for name, check in FIELD_CHECKS.items():
        if name in data and (why := check(data[name])) is not None:
            problems.append(f"{name} {why}")
    if key is not None and isinstance(data.get("id"), str) and data["id"] != key:
        problems.append(
            f"id {short_repr(data['id'], QUOTE_CHARS)} is not the key it is stored under"
        )
    if problems:
        raise ValueError("; ".join(clip_problems(problems, MAX_PROBLEMS)))
    return data


def stored_priority(value: object) -> int | None:
    """The priority to store for a message that carried ``value``.

    The broker clamps an integer priority to 0-9 (a caller's 10 runs as 9) and ignores any
    other value, so storing what the broker used keeps every entry we write replayable.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return max(c.PRIORITY_MIN, min(value, c.PRIORITY_MAX))


def replay_problems(
    task_name: str, queue: str | None, priority: int | None, tasks: Mapping[str, Any]
) -> list[str]:
    """Why a letter for ``task_name`` may not be sent to ``queue`` at ``priority`` (none: it may).

    ``tasks`` is the app's task registry. Only a task that writes dead letters could have failed
    into the queue (Celery's built-ins never do), so only such a task is replayed; a domain
    task only to its own domain's queue, so a replay cannot carry it around queue isolation.
    """
    problems: list[str] = []
    task = tasks.get(task_name)
    if task is None:
        problems.append(f"task_name {short_repr(task_name, QUOTE_CHARS)} is not a registered task")
    elif getattr(task, "dead_letter", False) is not True:
        problems.append(
            f"task_name {short_repr(task_name, QUOTE_CHARS)} is not a task that writes dead letters"
        )
    if queue is not None and queue not in c.QUEUES:
        problems.append(
            f"queue {short_repr(queue, QUOTE_CHARS)} is not one of {', '.join(c.QUEUES)}"
        )
    elif queue is not None:
        home = home_queue(task_name)
        if home is not None and home != queue:
            problems.append(f"queue {queue!r} is not the queue of {task_name} ({home})")
    if priority is not None and not c.PRIORITY_MIN <= priority <= c.PRIORITY_MAX:
        shown = short_repr(priority, QUOTE_CHARS)
        problems.append(f"priority {shown} is not from {c.PRIORITY_MIN} to {c.PRIORITY_MAX}")
    return problems
