"""Alert message templates: ``{name}`` fields filled from an alert, and nothing else.

Templates come from rule files that operators edit, and an alert's fields carry text from
failed tasks (exception messages). ``str.format`` would evaluate ``{x.__class__}``, index with
``{x[0]}``, call ``repr`` with ``{x!r}`` and allocate a gigabyte for ``{x:>999999999}``; a
message renderer must do none of that. So this module scans the template itself:

- ``{name}`` (an identifier) is replaced by the field's value; a missing field, or one whose
  value is None, shows as ``{name?}`` so the gap is visible in the message;
- ``{name:spec}`` applies ``spec`` only when it is in a small safe set (alignment, sign,
  grouping, a width up to ``MAX_FORMAT_WIDTH``, a precision up to ``MAX_FORMAT_PRECISION``, a
  type among ``d f e g %``) and the value is a number; otherwise the value is shown unformatted;
- anything else between braces (attribute access, indexing, positional ``{0}``, a conversion
  such as ``!r``, nested braces) is copied to the message literally and never evaluated;
- ``{{`` and ``}}`` are literal braces, as in ``str.format``.

Size is bounded twice. :func:`validate`, the strict check run when a rule is added, refuses
unbalanced braces (they would render as text nobody meant), a format spec whose width is over
``MAX_FORMAT_WIDTH`` or precision over ``MAX_FORMAT_PRECISION`` (``{count:999.99f}`` repeated
would turn a 1.5 MB template into a 100 MB message), and a template longer than a message may
be. And :func:`render` stops at ``ALERT_MESSAGE_MAX_CHARS`` whatever the template and the
values, ending the message with ``CUT_MARKER``, so no path builds a larger one. :func:`render`
never raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from personal_assistant.workers import constants as c
from personal_assistant.workers.bounded_yaml import MAX_PROBLEMS, clip_problems, short_repr

# A field's value longer than this is cut: an exception message can be a whole traceback, and
# Slack and e-mail subjects become unreadable long before that.
MAX_VALUE_CHARS: Final = 1000
# Lists (task ids, task names) are shown joined; beyond this many items the rest are counted.
MAX_LIST_ITEMS: Final = 20

# A column in a message is a few dozen characters wide; more is padding, not information.
MAX_FORMAT_WIDTH: Final = 100
# A float carries 17 significant digits; more precision prints noise.
MAX_FORMAT_PRECISION: Final = 20
# Ends a message cut at ALERT_MESSAGE_MAX_CHARS; {limit} is the cap.
CUT_MARKER: Final = "... [message cut at {limit} characters]"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The specs render applies: align, sign, thousands separator, width, precision, type (the
# width and precision bounds are checked on the numbers, see _within_bounds).
_SAFE_SPEC = re.compile(r"[<>^]?[+\- ]?,?(?P<width>[1-9]\d*)?(?:\.(?P<precision>\d+))?[dfeg%]?")
# Python's whole format-spec grammar, to find the width and precision of any spec written.
_ANY_SPEC = re.compile(
    r"(?:.?[<>=^])?[+\- ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?[a-zA-Z%]?",
    re.DOTALL,
)


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


# What a template's braces can be: an escaped brace, a field (no brace inside), a lone brace.
# One regex pass, so a large template costs milliseconds, and a lone '{' scans only to the
# next brace (never to the end again and again).
_TOKEN = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[{}]")
_ESCAPES: Final = frozenset({"{{", "}}"})
_LONE_BRACE: Final = {
    "}": "single '}}' at position {} (write '}}}}' for a literal brace)",
    "{": "unclosed '{{' at position {} (write '{{{{' for a literal brace)",
}
_NOT_FIELDS: Final = _ESCAPES | frozenset(_LONE_BRACE)


def _parts(template: str) -> Iterator[str | _Field]:
    """``template`` as literal text and fields, lazily, so a caller can stop early (a lone
    brace is text here; :func:`validate` is where it is a problem)."""
    pos = 0
    for match in _TOKEN.finditer(template):
        start, piece = match.start(), match.group()
        if start > pos:
            yield template[pos:start]
        pos = match.end()
        if piece in _ESCAPES:
            yield piece[0]
        elif piece in _LONE_BRACE:
            yield piece
        else:
            yield _Field(piece)
    if pos < len(template):
        yield template[pos:]


def _brace_problems(template: str, tokens: list[str]) -> list[str]:
    """One entry per lone brace, the first ``MAX_PROBLEMS`` saying where (the rest are only
    counted: a template of 100,000 braces costs no 100,000 messages)."""
    lone = sum(1 for token in tokens if token in _LONE_BRACE)
    shown: list[str] = []
    for match in _TOKEN.finditer(template) if lone else ():
        if len(shown) == min(lone, MAX_PROBLEMS):
            break
        if match.group() in _LONE_BRACE:
            shown.append(_LONE_BRACE[match.group()].format(match.start()))
    return shown + [""] * (lone - len(shown))


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


def _within_bounds(match: re.Match[str]) -> bool:
    width, precision = match.group("width"), match.group("precision")
    # Compared as text first: int() of a thousand-digit width is work for nothing.
    wide = width is not None and (len(width) > 3 or int(width) > MAX_FORMAT_WIDTH)
    fine = precision is None or (len(precision) <= 3 and int(precision) <= MAX_FORMAT_PRECISION)
    return fine and not wide


def _too_wide(field: _Field) -> bool:
    """Whether ``field``'s format spec has a width or precision over its bound."""
    match = _ANY_SPEC.fullmatch(field.spec) if field.spec and field.name else None
    return match is not None and not _within_bounds(match)


def _fill(field: _Field, fields: Mapping[str, Any]) -> str:
    if field.name is None:
        return field.raw
    value = fields.get(field.name)
    if value is None:
        return "{" + field.name + "?}"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    safe = _SAFE_SPEC.fullmatch(field.spec) if field.spec and is_number else None
    if safe is not None and _within_bounds(safe):
        # e.g. 'd' on a float raises ValueError: fall back to the plain value
        with contextlib.suppress(ValueError):
            return _clip(format(value, field.spec))  # '.20f' of 1e300 is 321 digits
    return format_value(value)


def clip_message(text: str, limit: int = c.ALERT_MESSAGE_MAX_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and :data:`CUT_MARKER`."""
    if len(text) <= limit:
        return text
    marker = CUT_MARKER.format(limit=limit)
    return text[: max(0, limit - len(marker))] + marker[:limit]


def render(
    template: str, fields: Mapping[str, Any], *, limit: int = c.ALERT_MESSAGE_MAX_CHARS
) -> str:
    """Fill ``template``'s ``{name}`` fields from ``fields``; never raises, never evaluates.

    The message is at most ``limit`` characters (a longer one ends with :data:`CUT_MARKER`);
    filling stops once it is over, so nothing larger is ever built.
    """
    pieces: list[str] = []
    size = 0
    for part in _parts(template):
        piece = part if isinstance(part, str) else _fill(part, fields)
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            break
    return clip_message("".join(pieces), limit)


def validate(template: str) -> tuple[str, ...]:
    """Check that ``template`` balances its braces and fits a message; return its field names.

    Raises ValueError naming the problems (at most ``MAX_PROBLEMS`` of them, then a count): an
    unbalanced brace, a format width or precision over its bound, a template longer than
    ``ALERT_MESSAGE_MAX_CHARS``. Fields that :func:`render` shows literally (such as ``{x.y}``)
    are not errors here: they are visible in the message, and the rule still works.
    """
    if not isinstance(template, str):
        raise ValueError(f"a template must be a string, not {type(template).__name__}")
    tokens = _TOKEN.findall(template)  # in C: cheap even for 100,000 braces
    braces = _brace_problems(template, tokens)
    fields = [_Field(token) for token in tokens if token not in _NOT_FIELDS]
    too_wide = [
        f"{short_repr(field.raw)} (a width is at most {MAX_FORMAT_WIDTH} and a precision at"
        f" most {MAX_FORMAT_PRECISION})"
        for field in filter(_too_wide, fields)
    ]
    problems = []
    if braces:
        problems.append("unbalanced braces in template: " + "; ".join(clip_problems(braces)))
    if too_wide:
        problems.append("format spec too large: " + "; ".join(clip_problems(too_wide)))
    if len(template) > c.ALERT_MESSAGE_MAX_CHARS:
        problems.append(
            f"the template is {len(template):,} characters, over the message limit of"
            f" {c.ALERT_MESSAGE_MAX_CHARS:,}"
        )
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(field.name for field in fields if field.name is not None)


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
