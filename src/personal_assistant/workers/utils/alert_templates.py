"""Alert message templates: ``{name}`` fields filled from an alert, and nothing else.

Templates come from rule files that operators edit, and an alert's fields carry text from
failed tasks (exception messages). ``str.format`` would evaluate ``{x.__class__}``, index with
``{x[0]}``, call ``repr`` with ``{x!r}`` and allocate a gigabyte for ``{x:>999999999}``; a
message renderer must do none of that. So this module scans the template itself:

- ``{name}`` (an identifier) is replaced by the field's value; a missing field, or one whose
  value is None, shows as ``{name?}`` so the gap is visible in the message;
- ``{name:spec}`` applies ``spec`` only when it is in a small safe set (alignment, sign,
  grouping, a width below 1000, a precision below 100, a type among ``d f e g %``) and the value
  is a number; otherwise the value is shown unformatted;
- anything else between braces (attribute access, indexing, positional ``{0}``, a conversion
  such as ``!r``, nested braces) is copied to the message literally and never evaluated;
- ``{{`` and ``}}`` are literal braces, as in ``str.format``.

:func:`render` never raises. :func:`validate` is the strict check run when a rule is added: it
refuses unbalanced braces, which would otherwise render as text nobody meant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

# A field's value longer than this is cut: an exception message can be a whole traceback, and
# Slack and e-mail subjects become unreadable long before that.
MAX_VALUE_CHARS: Final = 1000
# Lists (task ids, task names) are shown joined; beyond this many items the rest are counted.
MAX_LIST_ITEMS: Final = 20

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# align, sign, thousands separator, width (at most 3 digits), precision (2 digits), type.
_SAFE_SPEC = re.compile(r"[<>^]?[+\- ]?,?(?:[1-9]\d{0,2})?(?:\.\d{1,2})?[dfeg%]?")


class _Field:
    """One ``{...}`` of a template: its raw text and, when it is a plain name, the parts."""

    __slots__ = ("name", "raw", "spec")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        inner = raw[1:-1]
        name, colon, spec = inner.partition(":")
        plain = _NAME.fullmatch(name) is not None
        self.name: str | None = name if plain else None
        self.spec = spec if colon else ""


def _scan(template: str) -> tuple[list[str | _Field], list[str]]:
    """Split ``template`` into literal text and fields; also return the balance problems."""
    parts: list[str | _Field] = []
    problems: list[str] = []
    text: list[str] = []
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if char in "{}" and template.startswith(char * 2, i):
            text.append(char)
            i += 2
        elif char == "}":
            problems.append(f"single '}}' at position {i} (write '}}}}' for a literal brace)")
            text.append(char)
            i += 1
        elif char == "{":
            end = template.find("}", i + 1)
            nested = template.find("{", i + 1, end if end != -1 else n)
            if end == -1 or nested != -1:
                problems.append(f"unclosed '{{' at position {i} (write '{{{{' for a literal brace)")
                text.append(char)
                i += 1
                continue
            if text:
                parts.append("".join(text))
                text = []
            parts.append(_Field(template[i : end + 1]))
            i = end + 1
        else:
            text.append(char)
            i += 1
    if text:
        parts.append("".join(text))
    return parts, problems


def _clip(text: str) -> str:
    if len(text) <= MAX_VALUE_CHARS:
        return text
    return text[:MAX_VALUE_CHARS] + f"... [{len(text) - MAX_VALUE_CHARS} chars cut]"


def format_value(value: Any) -> str:
    """How a field's value reads in a message: numbers without noise, lists joined, cut long."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) >= 1e-3 else f"{value:.3g}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [format_value(item) for item in list(value)[:MAX_LIST_ITEMS]]
        extra = len(value) - len(items)
        return _clip(", ".join(items) + (f" (+{extra} more)" if extra > 0 else ""))
    return _clip(str(value))


def _fill(field: _Field, fields: Mapping[str, Any]) -> str:
    if field.name is None:
        return field.raw
    value = fields.get(field.name)
    if value is None:
        return "{" + field.name + "?}"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if field.spec and is_number and _SAFE_SPEC.fullmatch(field.spec):
        # e.g. 'd' on a float raises ValueError: fall back to the plain value
        with contextlib.suppress(ValueError):
            return format(value, field.spec)
    return format_value(value)


def render(template: str, fields: Mapping[str, Any]) -> str:
    """Fill ``template``'s ``{name}`` fields from ``fields``; never raises, never evaluates."""
    parts, _ = _scan(template)
    return "".join(part if isinstance(part, str) else _fill(part, fields) for part in parts)


def validate(template: str) -> tuple[str, ...]:
    """Check that ``template``'s braces balance; return the field names it uses.

    Raises ValueError naming each problem. Fields that :func:`render` shows literally (such as
    ``{x.y}``) are not errors here: they are visible in the message, and the rule still works.
    """
    if not isinstance(template, str):
        raise ValueError(f"a template must be a string, not {type(template).__name__}")
    parts, problems = _scan(template)
    if problems:
        raise ValueError("unbalanced braces in template: " + "; ".join(problems))
    return tuple(p.name for p in parts if isinstance(p, _Field) and p.name is not None)


def fingerprint(rule_name: str, labels: Mapping[str, str]) -> str:
    """A stable id of one alert group: the same rule and labels give the same value everywhere."""
    text = json.dumps([rule_name, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One notification: a group of one rule that fired (or resolved), with its message."""

    rule: str
    state: str  # firing | resolved
    severity: str
    labels: dict[str, str]
    fields: dict[str, Any]
    message: str
    fingerprint: str
    timestamp: float
    channels: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
