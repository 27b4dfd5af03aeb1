"""One bounded loader for every file users hand us: workflows, alert rules, beat entries.

PyYAML's safe loader is safe from code execution, not from exhaustion: 601 bytes of nested
aliases expand to gigabytes, a 100,000-deep list ends in RecursionError, ``.inf`` and ``1e400``
are floats no duration can hold, ``/dev/zero`` never ends. This module reads and parses under
fixed limits and turns every problem into one :class:`InputFileError`, one line that names the
file and the line (and the column of a syntax error or a forbidden character; never PyYAML's
``<unicode string>``):

- a regular file only, at most ``max_bytes`` (read stops one byte past the cap);
- UTF-8 only;
- no aliases (``*name``): every value is written where it is used;
- nesting and node counts capped before anything is built;
- plain data only (null, bool, int, float, string, list, mapping); dates stay strings; integers
  of at most ``MAX_INT_DIGITS`` digits; no infinite or NaN floats; mapping keys are strings (the
  text as written, as JSON has them), never repeated.

JSON files go through the same path (JSON is YAML here), so both get the same limits and the
same messages. :func:`short_repr` and :func:`clip_problems` keep error messages bounded too.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

# Defaults sized for hand-written files: a workflow of thousands of tasks is well under a
# megabyte and a few levels deep; anything past these limits is a mistake or an attack. Parsing
# costs about 5 us a value (libyaml's parser, our composer): 100,000 values in under a second.
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 32
MAX_NODES: Final = 100_000
# 18 digits fit any int64, which is more than any count, id or threshold needs.
MAX_INT_DIGITS: Final = 18
# What one value may take in an error message, and how many problems a report lists.
MAX_REPR_CHARS: Final = 80
MAX_PROBLEMS: Final = 20

_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MAP_TAG: Final = "tag:yaml.org,2002:map"


class InputFileError(ValueError):
    """A file (or text) users handed us cannot be read as plain data; the message says where."""

    def __init__(
        self, source: str, reason: str, line: int | None = None, column: int | None = None
    ) -> None:
        where = f"{source}: line {line}" if line is not None else source
        if line is not None and column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {reason}")
        self.source, self.reason, self.line, self.column = source, reason, line, column


@dataclass(frozen=True)
class Limits:
    """How much a file may hold."""

    max_bytes: int = MAX_FILE_BYTES
    max_depth: int = MAX_DEPTH
    max_nodes: int = MAX_NODES


def read_user_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (never a device, pipe or socket)."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputFileError(source, f"cannot read it ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputFileError(source, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise InputFileError(source, f"cannot read it ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputFileError(source, f"larger than the limit of {max_bytes:,} bytes")
    return data


def decode_text(data: bytes | str, source: str) -> str:
    """``data`` as text, refusing bytes that are not UTF-8 (with the line they are on)."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputFileError(source, f"not UTF-8 (byte 0x{data[exc.start]:02x})", line) from None


# libyaml's parser (C) when PyYAML was built with it: the pure-Python scanner takes about 20 us a
# value, seconds for a file at the byte cap; the C one a fiftieth of that.
_PARSER: Final[Any] = (
    yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
)


def compose(text: str, source: str, limits: Limits = Limits()) -> yaml.Node | None:
    """The node tree of one YAML document, within ``limits``; None when empty.

    Built here from the parser's events, iteratively (PyYAML's composer recurses, so deep
    nesting ends in RecursionError), refusing aliases as they come and counting as it goes.
    """
    try:
        parser = _PARSER(text)
    except yaml.YAMLError as exc:  # the pure-Python reader checks the characters up front
        raise _input_error(source, exc, text) from None
    try:
        return _compose_events(parser, source, limits)
    except yaml.YAMLError as exc:
        raise _input_error(source, exc, text) from None
    finally:
        parser.dispose()


class _Tree:
    """Nodes built from parser events: open collections on a stack, keys waiting for values."""

    def __init__(self, source: str, limits: Limits) -> None:
        self.source, self.limits = source, limits
        self.root: yaml.Node | None = None
        self.stack: list[yaml.Node] = []
        self.pending_keys: list[yaml.Node | None] = []  # per open mapping
        self.nodes = 0

    def add(self, parser: Any, event: Any) -> None:
        """A scalar, or the start of a collection."""
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise _at(self.source, event, f"more than {self.limits.max_nodes:,} values")
        node = _node_of(parser, event)
        if not self.stack:
            self.root = node
        elif isinstance(parent := self.stack[-1], yaml.SequenceNode):
            parent.value.append(node)
        elif self.pending_keys[-1] is None:
            self.pending_keys[-1] = node
        else:
            parent.value.append((self.pending_keys[-1], node))
            self.pending_keys[-1] = None
        if isinstance(node, yaml.CollectionNode):
            self.stack.append(node)
            if len(self.stack) > self.limits.max_depth:
                reason = f"nested deeper than {self.limits.max_depth} levels"
                raise _at(self.source, event, reason)
            if isinstance(node, yaml.MappingNode):
                self.pending_keys.append(None)

    def close(self) -> None:
        """The end of the innermost open collection."""
        if isinstance(self.stack.pop(), yaml.MappingNode):
            self.pending_keys.pop()


def _compose_events(parser: Any, source: str, limits: Limits) -> yaml.Node | None:
    tree = _Tree(source, limits)
    documents = 0
    while True:
        event = parser.get_event()
        kind = type(event)
        if kind in _CLOSING:
            tree.close()
        elif kind is yaml.StreamEndEvent:
            return tree.root
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _at(source, event, "one document only (found a second '---')")
        elif kind is yaml.AliasEvent:
            raise _at(source, event, "aliases (*name) are not allowed: write the value out")
        elif kind in _OPENING:
            tree.add(parser, event)


def _node_of(parser: Any, event: Any) -> yaml.Node:
    marks = (event.start_mark, event.end_mark)
    if isinstance(event, yaml.ScalarEvent):
        tag = event.tag or parser.resolve(yaml.ScalarNode, event.value, event.implicit)
        return yaml.ScalarNode(tag, event.value, *marks, style=event.style)
    if isinstance(event, yaml.SequenceStartEvent):
        tag = event.tag or parser.resolve(yaml.SequenceNode, None, event.implicit)
        return yaml.SequenceNode(tag, [], *marks, flow_style=event.flow_style)
    tag = event.tag or parser.resolve(yaml.MappingNode, None, event.implicit)
    return yaml.MappingNode(tag, [], *marks, flow_style=event.flow_style)


_CLOSING: Final = frozenset({yaml.SequenceEndEvent, yaml.MappingEndEvent})
_OPENING: Final = frozenset({yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent})


def _at(source: str, event: Any, reason: str) -> InputFileError:
    mark = event.start_mark
    return InputFileError(source, reason, None if mark is None else mark.line + 1)


def _input_error(source: str, exc: yaml.YAMLError, text: str) -> InputFileError:
    """One line naming ``source``, the line and the column: PyYAML's own messages name
    ``<unicode string>`` (it was handed text, not the file) and span lines."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        column = None if mark is None else mark.column + 1
        reason = str(exc.problem or exc.context or "not valid YAML")
        return InputFileError(source, short_repr(reason, 200, quote=False), line, column)
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        line, column = _line_and_column(text, exc.position, exc.character)
        reason = f"character #x{exc.character:04x}: {exc.reason}"
        return InputFileError(source, reason, line, column)
    return InputFileError(source, short_repr(str(exc), 200, quote=False))


def _line_and_column(text: str, position: int, character: int) -> tuple[int, int]:
    """1-based line and column of a reader error's ``position``: a character index from the
    pure-Python reader, a UTF-8 byte offset from libyaml's."""
    if not (0 <= position < len(text) and ord(text[position]) == character):
        position = len(text.encode("utf-8")[:position].decode("utf-8", "ignore"))
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def node_line(node: yaml.Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


def construct(node: yaml.Node, source: str) -> Any:
    """Plain Python data of a composed node (see the module doc for what is refused)."""
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node, source)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            raise InputFileError(source, f"tag {node.tag!r} is not allowed", node_line(node))
        return [construct(item, source) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP_TAG:
            raise InputFileError(source, f"tag {node.tag!r} is not allowed", node_line(node))
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputFileError(source, "a key must be a single value", node_line(key_node))
            _scalar(key_node, source)  # its tag must be plain data too
            # A key is a name, as in JSON: its text as written (YAML 1.1 would make `on:` True).
            key = str(key_node.value)
            if key in out:
                raise InputFileError(
                    source, f"duplicate key {short_repr(key)}", node_line(key_node)
                )
            out[key] = construct(value_node, source)
        return out
    raise InputFileError(source, "unsupported YAML node", node_line(node))


def _scalar(node: yaml.ScalarNode, source: str) -> Any:
    name = node.tag.removeprefix(_YAML_TAG)
    if name in _TEXT_TAGS:
        return str(node.value)  # dates and the like stay as written: JSON has no such types
    build = _BUILDERS.get(name) if node.tag.startswith(_YAML_TAG) else None
    if build is None:
        reason = f"tag {short_repr(node.tag)} is not allowed (plain data only)"
        raise InputFileError(source, reason, node_line(node))
    text = str(node.value)
    if name == "int" and len(text.lstrip("+-").replace("_", "")) > MAX_INT_DIGITS:
        reason = f"the number {short_repr(text)} has more than {MAX_INT_DIGITS} digits"
        raise InputFileError(source, reason, node_line(node))
    value = build(node)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputFileError(source, f"{short_repr(text)} is not a finite number", node_line(node))
    return value


# PyYAML's own constructors of the plain scalar types, called directly: construct_object would
# remember every node it built (a shared loader would keep them all).
_CONSTRUCTOR = yaml.SafeLoader("")
_YAML_TAG: Final = "tag:yaml.org,2002:"
_TEXT_TAGS: Final = frozenset({"str", "timestamp", "binary", "merge", "value"})
_BUILDERS: Final = {
    "null": _CONSTRUCTOR.construct_yaml_null,
    "bool": _CONSTRUCTOR.construct_yaml_bool,
    "int": _CONSTRUCTOR.construct_yaml_int,
    "float": _CONSTRUCTOR.construct_yaml_float,
}


def load_yaml(data: bytes | str, source: str, limits: Limits = Limits()) -> Any:
    """Plain data of a YAML document given as bytes or text (None when empty); a ``source``
    ending in ``.json`` is read as JSON (YAML would take ``1e5`` for a string)."""
    if isinstance(data, bytes) and len(data) > limits.max_bytes:
        raise InputFileError(source, f"larger than the limit of {limits.max_bytes:,} bytes")
    text = decode_text(data, source)
    if len(text) > limits.max_bytes:
        raise InputFileError(source, f"larger than the limit of {limits.max_bytes:,} bytes")
    if source.endswith(".json"):
        return _load_json(text, source, limits)
    node = compose(text, source, limits)
    return None if node is None else construct(node, source)


class _Refused(ValueError):
    """A JSON value the loader refuses (raised inside json.loads' hooks)."""


def _load_json(text: str, source: str, limits: Limits) -> Any:
    try:
        data = json.loads(
            text,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise InputFileError(source, exc.msg, exc.lineno, exc.colno) from None
    except RecursionError:
        raise InputFileError(source, f"nested deeper than {limits.max_depth} levels") from None
    except _Refused as exc:
        raise InputFileError(source, str(exc)) from None
    _check_shape(data, source, limits)
    return data


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{short_repr(text)} is not a finite number")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"the number {short_repr(text)} has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {short_repr(key)}")
        out[key] = value
    return out


def _check_shape(data: Any, source: str, limits: Limits) -> None:
    """Depth and value count of parsed JSON, walked without recursion."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    count = 0
    while pending:
        value, depth = pending.pop()
        count += 1
        if count > limits.max_nodes:
            raise InputFileError(source, f"more than {limits.max_nodes:,} values")
        if isinstance(value, (dict, list)):
            if depth > limits.max_depth:
                raise InputFileError(source, f"nested deeper than {limits.max_depth} levels")
            items = value.values() if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)


def load_yaml_file(path: str | Path, limits: Limits = Limits()) -> Any:
    """Plain data of a YAML or JSON file (see :func:`read_user_file` and :func:`load_yaml`)."""
    return load_yaml(read_user_file(path, limits.max_bytes), str(path), limits)


def short_repr(value: Any, limit: int = MAX_REPR_CHARS, *, quote: bool = True) -> str:
    """``repr(value)`` (or ``str`` with ``quote=False``) cut to ``limit`` characters.

    Never the repr of something huge: strings and containers are cut before they are printed.
    """
    if isinstance(value, str):
        cut = value[: limit + 1]
        text = repr(cut) if quote else cut
    elif isinstance(value, (dict, list, tuple, set)):
        text = f"<{type(value).__name__} of {len(value)}>"
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # repr refuses integers past 4,300 digits (and is slow long before): say their size.
        text = f"<an integer of about {value.bit_length() * 0.30103 + 1:.0f} digits>"
    else:
        text = repr(value) if quote else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_problems(problems: Sequence[str], limit: int = MAX_PROBLEMS) -> list[str]:
    """At most ``limit`` problems, the last saying how many more there were."""
    if len(problems) <= limit:
        return list(problems)
    return [*problems[: limit - 1], f"... and {len(problems) - limit + 1} more problems"]
