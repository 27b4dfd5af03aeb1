"""Poison messages: what makes a message unusable, in words an operator can act on.

A poison message is one no worker can ever run: not JSON, not a kombu message, too large, an
unknown task, a header of the wrong type, an unparseable ETA, arguments the task does not take.
Left to Celery, some stop the worker's main process (kombu's fetch decodes the body unguarded)
and the others are logged and dropped. Here each one is *rejected*: dead-lettered with its
reason and its raw bytes, counted in ``celery_task_rejected_total{reason}``, and acknowledged,
and the worker serves the next message.

The transport finds the first three kinds while fetching and wraps the raw bytes in a
*poison envelope* (scripts.py), a well-formed message marked with ``keys.POISON_HEADER``, so
the message stays in Redis's custody until the worker has dead-lettered it. The rest are found
by :func:`screen_headers` and :func:`screen_body` before Celery sees the message
(intake.py). This module is pure: no Redis, no Celery.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from personal_assistant.workers import keys

# The envelope's header and content-type names (what each holds: keys.py), under the names
# callers of this module know them by.
POISON_HEADER: Final = keys.POISON_HEADER
POISON_SIZE_HEADER: Final = keys.POISON_SIZE_HEADER
POISON_DETAIL_HEADER: Final = keys.POISON_DETAIL_HEADER
POISON_TAIL_HEADER: Final = keys.POISON_TAIL_HEADER
POISON_CONTENT_TYPE: Final = keys.POISON_CONTENT_TYPE

# The reasons, as they appear in the metric label and the dead letter.
NOT_JSON: Final = "not_json"
MALFORMED: Final = "malformed"
TOO_LARGE: Final = "too_large"
UNKNOWN_TASK: Final = "unknown_task"
BAD_HEADER: Final = "bad_header"
BAD_ETA: Final = "bad_eta"
BAD_BODY: Final = "bad_body"
INVALID_ARGUMENTS: Final = "invalid_arguments"
CONTENT_DISALLOWED: Final = "content_disallowed"
REASONS: Final = frozenset(
    {
        NOT_JSON,
        MALFORMED,
        TOO_LARGE,
        UNKNOWN_TASK,
        BAD_HEADER,
        BAD_ETA,
        BAD_BODY,
        INVALID_ARGUMENTS,
        CONTENT_DISALLOWED,
    }
)

_STR = (str,)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
_NUMBER = (int, float)

# Celery's protocol 2 headers (app/amqp.py: as_task_v2) and the types Celery itself writes, and
# the publish time this package's producers stamp. A header outside this table is the
# producer's own business and passes unchecked.
HEADER_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "task": _STR,
    "id": _STR,
    "lang": _OPT_STR,
    "shadow": _OPT_STR,
    "eta": _OPT_STR,
    "expires": _OPT_STR,
    "group": _OPT_STR,
    "group_index": _OPT_INT,
    "retries": (int,),
    "timelimit": (list, tuple, type(None)),
    "root_id": _OPT_STR,
    "parent_id": _OPT_STR,
    "argsrepr": _OPT_STR,
    "kwargsrepr": _OPT_STR,
    "origin": _OPT_STR,
    "ignore_result": (bool, type(None)),
    "replaced_task_nesting": _OPT_INT,
    "stamped_headers": (list, type(None)),
    "stamps": (dict, type(None)),
    keys.PUBLISHED_AT_HEADER: (int, float, type(None)),
}


@dataclass(frozen=True)
class Rejection:
    """Why a message is rejected: one of :data:`REASONS`, and a sentence for the operator."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def poison_of(headers: Any) -> Rejection | None:
    """The rejection a poison envelope carries (from the transport), or None for a message."""
    if not isinstance(headers, Mapping):
        return None
    reason = headers.get(POISON_HEADER)
    if reason is None:
        return None
    size = headers.get(POISON_SIZE_HEADER)
    reason = reason if isinstance(reason, str) and reason in REASONS else MALFORMED
    detail = {
        NOT_JSON: "the message is not JSON",
        MALFORMED: "the message is not a kombu message (no delivery tag or delivery info)",
        TOO_LARGE: "the message is larger than BROKER_MAX_MESSAGE_BYTES",
    }.get(reason, reason)
    detail = str(headers.get(POISON_DETAIL_HEADER) or detail)
    return Rejection(reason, f"{detail} ({size} bytes)" if size is not None else detail)


_TAIL_ID = re.compile(r'"id": "([^"\\]{1,200})"')
_TAIL_TASK = re.compile(r'"task": "([^"\\]{1,200})"')


def named_in_tail(headers: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(task id, task name) read from the tail of a message too large to decode, if there.

    Only a label for the dead letter and the failed result: nothing else is taken from it.
    """
    tail = headers.get(POISON_TAIL_HEADER)
    if not isinstance(tail, str):
        return None, None
    task_id, name = _TAIL_ID.search(tail), _TAIL_TASK.search(tail)
    return (task_id.group(1) if task_id else None, name.group(1) if name else None)


def printable(text: str) -> str:
    """``text`` with undecodable bytes (kept as surrogates) shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def screen_headers(headers: Any) -> Rejection | None:
    """Check a task message's headers against the types Celery writes; None when they pass."""
    if not isinstance(headers, Mapping):
        return Rejection(BAD_HEADER, f"headers are a {type(headers).__name__}, not a mapping")
    for name in ("task", "id"):
        value = headers.get(name)
        if not isinstance(value, str) or not value:
            return Rejection(BAD_HEADER, f"header {name!r} must be a non-empty string")
    for name, types in HEADER_TYPES.items():
        if name not in headers:
            continue
        value = headers[name]
        # bool is an int subclass: retries=True is as wrong as retries="abc".
        wrong_bool = _is_bool(value) and bool not in types
        if wrong_bool or not isinstance(value, types):
            return Rejection(
                BAD_HEADER, f"header {name!r} is {value!r:.80}, not {_type_names(types)}"
            )
    retries = headers.get("retries", 0)
    if isinstance(retries, int) and retries < 0:
        return Rejection(BAD_HEADER, f"header 'retries' is negative ({retries})")
    limits = headers.get("timelimit")
    if limits is not None and (
        len(limits) != 2
        or any(v is not None and (_is_bool(v) or not isinstance(v, _NUMBER)) for v in limits)
    ):
        return Rejection(BAD_HEADER, f"header 'timelimit' is {limits!r:.80}, not [hard, soft]")
    return None


def screen_eta(headers: Mapping[str, Any], parse: Callable[[str], Any]) -> Rejection | None:
    """Check that ``eta`` and ``expires`` parse with ``parse`` (Celery's own ISO 8601 reader)."""
    for name in ("eta", "expires"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            parse(value)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            return Rejection(BAD_ETA, f"header {name!r} is {value!r:.80}: {exc}")
    return None


def screen_body(body: Any, check_arguments: Callable[..., Any] | None) -> Rejection | None:
    """Check a decoded protocol-2 body ``[args, kwargs, embed]`` and, when the task has a
    signature check, that the arguments bind to it."""
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        return Rejection(BAD_BODY, "the body is not [args, kwargs, embed]")
    args, kwargs, embed = body
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        return Rejection(BAD_BODY, "args must be a list and kwargs an object")
    if embed is not None and not isinstance(embed, dict):
        return Rejection(BAD_BODY, "the body's third item must be an object")
    if not all(isinstance(key, str) for key in kwargs):
        return Rejection(BAD_BODY, "keyword argument names must be strings")
    if check_arguments is not None:
        try:
            check_arguments(*args, **kwargs)
        except TypeError as exc:
            return Rejection(INVALID_ARGUMENTS, str(exc))
    return None


def raw_text(data: bytes | str | None, limit: int) -> str:
    """Up to ``limit`` characters of a raw body, undecodable bytes shown as ``\\xNN``."""
    if data is None:
        return ""
    text = data if isinstance(data, str) else data.decode("utf-8", "backslashreplace")
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} chars cut]"


def describe_raw(headers: Any, body: Any, limit: int) -> str:
    """The message as an operator reads it in ``dlq show``: its headers and raw body."""
    try:
        shown = json.dumps(headers, default=repr)[:limit]
    except (TypeError, ValueError):
        shown = repr(headers)[:limit]
    return f"headers: {shown}\nbody: {raw_text(body, limit)}"


def _type_names(types: tuple[type, ...]) -> str:
    names = ["null" if t is type(None) else t.__name__ for t in types]
    return " or ".join(names)


def make_printable(payload: Any) -> Any:
    """A poison envelope whose raw bytes (undecodable ones kept as surrogates) are made text,
    so kombu can build a message of it; any other payload unchanged."""
    if isinstance(payload, dict) and payload.get("content-type") == POISON_CONTENT_TYPE:
        if isinstance(payload.get("body"), str):
            payload["body"] = printable(payload["body"])
        headers = payload.get("headers")
        if isinstance(headers, dict) and isinstance(headers.get(POISON_TAIL_HEADER), str):
            headers[POISON_TAIL_HEADER] = printable(headers[POISON_TAIL_HEADER])
    return payload


def envelope_for(
    raw: bytes | str, tag: str, queue: str, detail: str, keep: int = 20_000
) -> dict[str, Any]:
    """A poison envelope built by the consumer for bytes the fetch script could not judge
    (JSON that Redis's decoder accepts and Python's does not): the same shape the script
    writes, under the delivery tag the message is already held by."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    return {
        "body": text[:keep],
        "content-type": POISON_CONTENT_TYPE,
        "content-encoding": "binary",
        "headers": {
            POISON_HEADER: MALFORMED,
            POISON_SIZE_HEADER: len(raw),
            POISON_DETAIL_HEADER: detail,
        },
        "properties": {
            "delivery_tag": tag,
            "priority": 0,
            "delivery_info": {"exchange": "", "routing_key": queue},
        },
    }
