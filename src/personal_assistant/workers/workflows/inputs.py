"""A workflow definition given as Python data, checked as the plain JSON it will be stored as.

Files go through the bounded loader (bounded_yaml.py), which refuses what JSON cannot
hold; a dict handed to ``submit_workflow`` does not. It may hold anything Python can: ``inf``,
a 5,000-digit integer (``str()`` of it raises), keys that are not strings (JSON would turn
``1`` into ``"1"``, or fail on a tuple), sets and objects, strings with lone surrogates (UTF-8
cannot encode them), a list nested 100,000 deep (``json.dumps`` recurses), a list holding itself,
or a few small lists shared so often that their serialisation takes gigabytes (the alias bomb,
without YAML). :func:`plain_copy` walks it once, iteratively, counting the bytes of its compact
JSON as it goes: it stops as soon as the size or depth limit is passed, and reports every value
JSON cannot hold with its path. What it returns is a copy of plain dicts, lists and scalars, so
what is validated is what is stored, whatever the caller does with its own objects afterwards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from personal_assistant.workers import bounded_yaml

# The same rules as the file loader's, so a dict and a file are judged alike.
MAX_DEPTH: Final = bounded_yaml.MAX_DEPTH
MAX_INT_DIGITS: Final = bounded_yaml.MAX_INT_DIGITS
_MAX_INT: Final = 10**MAX_INT_DIGITS
# Integers past this are described by their size (their text would not fit a message anyway).
_MAX_SHOWN_INT: Final = 10**40
# How much of a key a path shows in a message.
_KEY_CHARS: Final = 40


class Refused:
    """Stands in the copy for a value or key JSON cannot hold; shows as its description, so
    the validator can name it without touching the original (``str()`` of it may raise)."""

    __slots__ = ("description",)

    def __init__(self, description: str) -> None:
        self.description = description

    def __repr__(self) -> str:
        return self.description

    __str__ = __repr__


class DefinitionTooLarge(ValueError):
    """The data is over a size or depth limit (checked before it is walked further)."""


@dataclass(slots=True)
class _Path:
    """Where a value sits, as a chain of parents: turned into text only when a message names it."""

    parent: _Path | None
    step: str | int

    def text(self) -> str:
        steps: list[str | int] = []
        node: _Path | None = self
        while node is not None:
            steps.append(node.step)
            node = node.parent
        out = ""
        for step in reversed(steps):
            out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
        return out or "the definition"


def _where(path: _Path | None) -> str:
    return "the definition" if path is None else path.text()


def _key_step(key: str) -> str:
    return key if len(key) <= _KEY_CHARS else key[: _KEY_CHARS - 1] + "…"


def describe(value: Any) -> str:
    """A short, safe description of any value for a message (never a huge or failing repr)."""
    if isinstance(value, Refused):
        return value.description
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return bounded_yaml.short_repr(value)
    if isinstance(value, int):
        if abs(value) >= _MAX_SHOWN_INT:  # str() of a 5,000-digit int raises: say its size
            return f"<an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits>"
        return bounded_yaml.short_repr(value)
    if isinstance(value, str | list | dict | tuple | set):
        return bounded_yaml.short_repr(value)
    return f"<{type(value).__name__}>"


_CONSTANT_SIZES: Final = {None: 4, True: 4, False: 5}  # null, true, false


def _scalar_size(value: Any) -> tuple[int, str | None]:
    """Bytes of a scalar's compact JSON, or why JSON cannot hold it."""
    problem: str | None = None
    if value is None or isinstance(value, bool):
        size = _CONSTANT_SIZES[value]
    elif isinstance(value, int):
        size = len(str(int(value))) if abs(value) < _MAX_INT else 1
        if abs(value) >= _MAX_INT:
            problem = f"{describe(value)} has more than {MAX_INT_DIGITS} digits"
    elif isinstance(value, float):
        size = len(repr(float(value)))
        if not math.isfinite(value):
            problem = f"{value!r} is not a finite number"
    else:
        size = 1
        problem = f"{describe(value)} is not JSON data (null, bool, number, string, list, mapping)"
    return size, problem


def _string_size(value: str, budget: int) -> tuple[int, str | None]:
    """Bytes of a string's JSON (UTF-8), or why it cannot be stored; past ``budget`` it is not
    encoded at all (every character takes a byte at least)."""
    if len(value) + 2 > budget:
        return len(value) + 2, None
    try:
        return len(json.dumps(str(value), ensure_ascii=False).encode("utf-8")), None
    except UnicodeEncodeError:
        return len(value) + 2, "a string holding a lone surrogate is not valid Unicode"


def plain_copy(value: Any, max_bytes: int) -> tuple[Any, list[str]]:
    """A plain-JSON copy of ``value`` and the problems found in it (each naming its path).

    Raises :class:`DefinitionTooLarge` as soon as the compact JSON passes ``max_bytes`` or the
    nesting passes ``MAX_DEPTH``. A value or key JSON cannot hold is reported, and stands in the
    copy as a :class:`Refused` marker (the validator then names it where it is checked).
    """
    walk = _Walk(max_bytes)
    return walk.run(value), walk.problems


# A container being copied: its remaining (slot, child, path step)s, depth, path and copy.
_Frame = tuple[Iterator[tuple[Any, Any, str | int]], int, "_Path | None", Any]


class _Walk:
    """Depth first, one frame per open container: memory follows the depth, not the width."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.problems: list[str] = []
        self.frames: list[_Frame] = []

    def run(self, value: Any) -> Any:
        root: list[Any] = [None]
        self._visit(value, 1, None, root, 0)
        frames, limit = self.frames, self.max_bytes
        while frames:
            items, depth, path, into = frames[-1]
            for slot, child, name in items:
                kind = type(child)
                # The common plain values inline (this walk is on every submit's path).
                if kind is str and child.isascii() and child.isprintable():
                    into[slot] = child
                    self.size += len(child) + 2 + child.count('"') + child.count("\\")
                elif kind is int and -_MAX_INT < child < _MAX_INT:
                    into[slot] = child
                    self.size += len(str(child))
                else:
                    opened = len(frames)
                    self._visit(child, depth + 1, _Path(path, name), into, slot)
                    if len(frames) > opened:
                        break  # depth first: the new container before this one's next value
                    continue
                if self.size > limit:
                    raise self._too_large()
            else:
                frames.pop()
        return root[0]

    def _grow(self, grown: int) -> None:
        self.size += grown
        if self.size > self.max_bytes:
            raise self._too_large()

    def _too_large(self) -> DefinitionTooLarge:
        return DefinitionTooLarge(
            f"the definition is larger than the limit of {self.max_bytes:,} bytes (as JSON)"
        )

    def _visit(self, item: Any, depth: int, path: _Path | None, into: Any, slot: Any) -> None:
        if isinstance(item, str):
            grown, problem = _string_size(item, self.max_bytes - self.size + 1)
            into[slot] = str(item)
        elif isinstance(item, dict | list | tuple | Mapping):
            _check_depth(depth, path)
            count = len(item)
            # Brackets and commas now; each value (and key) takes a byte at least, so a
            # container too long for what is left is refused before it is walked.
            self._grow(2 + max(count - 1, 0))
            minimum = count * (4 if isinstance(item, Mapping) else 1)
            if self.size + minimum > self.max_bytes:
                raise self._too_large()
            into[slot] = self._open(item, depth, path)
            return
        else:
            grown, problem = _scalar_size(item)
            into[slot] = Refused(describe(item)) if problem else _plain_scalar(item)
        self._grow(grown)
        if problem is not None:
            self.problems.append(f"{_where(path)}: {problem}")

    def _open(
        self, item: Mapping[Any, Any] | list[Any] | tuple[Any, ...], depth: int, path: _Path | None
    ) -> Any:
        if isinstance(item, Mapping):
            copied: dict[Any, Any] = {}
            self.frames.append((self._entries(item, path, copied), depth, path, copied))
            return copied
        listed: list[Any] = [None] * len(item)
        self.frames.append((((i, v, i) for i, v in enumerate(item)), depth, path, listed))
        return listed

    def _entries(
        self, item: Mapping[Any, Any], path: _Path | None, copied: dict[Any, Any]
    ) -> Iterator[tuple[Any, Any, str | int]]:
        """The mapping's entries, each key counted (and checked) as it comes."""
        for key, child in item.items():
            if type(key) is str and key.isascii() and key.isprintable():
                text = key
                self._grow(len(key) + 3 + key.count('"') + key.count("\\"))  # with ":"
            elif isinstance(key, str):
                text = str(key)
                grown, problem = _string_size(text, self.max_bytes - self.size + 1)
                self._grow(grown + 1)  # the key and its colon
                if problem is not None:
                    self.problems.append(f"{_where(path)}: a key: {problem}")
            else:
                self._grow(4)
                self.problems.append(f"{_where(path)}: the key {describe(key)} is not a string")
                marker = Refused(describe(key))
                copied[marker] = None
                yield marker, child, marker.description
                continue
            copied[text] = None  # keeps the caller's order
            yield text, child, _key_step(text)


def _plain_scalar(value: Any) -> Any:
    """Subclasses (IntEnum, numpy floats) as the plain type JSON stores."""
    if value is None or isinstance(value, bool):
        return value
    return int(value) if isinstance(value, int) else float(value)


def _check_depth(depth: int, path: _Path | None) -> None:
    if depth > MAX_DEPTH:
        # Cut the path: a list nested 100,000 deep would name 100,000 steps.
        where = bounded_yaml.short_repr(_where(path), 120, quote=False)
        raise DefinitionTooLarge(f"{where}: nested deeper than {MAX_DEPTH} levels")
