"""Safe conditions for DAG workflow tasks: a task runs only when its condition is true.

A condition is a small Python-looking expression over the outcomes of upstream tasks::

    task_a.status == 'completed' and task_a.result['count'] > 10

The text is parsed with :func:`ast.parse` and checked node by node against an explicit
whitelist; it is never compiled or handed to ``eval``/``exec``. The check turns each allowed
node into a small Python closure, so evaluation can only read the four fields of a
:class:`TaskOutcome`, index into JSON results with constant keys, and compare. Sizes are bounded
before and after parsing, so a hostile condition costs at most a few thousand steps.
"""

from __future__ import annotations

import ast
import io
import math
import operator
import tokenize
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Limits: generous for hand-written conditions, small enough that a hostile one stays cheap.
MAX_SOURCE_LENGTH = 2_000
MAX_NODES = 500
MAX_DEPTH = 32
MAX_STR_LENGTH = 1_000
MAX_INT = 10**18
MAX_DISPLAY_ELEMENTS = 1_000
OUTCOME_FIELDS = ("status", "result", "error", "duration")
_SNIPPET_LENGTH = 60

_COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.In: ("in", lambda left, right: left in right),
    ast.NotIn: ("not in", lambda left, right: left not in right),
    ast.Is: ("is", operator.is_),
    ast.IsNot: ("is not", operator.is_not),
}
_REFUSED: dict[type[ast.AST], str] = {
    ast.Call: "calls are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.BinOp: "arithmetic is not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "starred expressions are not allowed",
    ast.Dict: "dict displays are not allowed",
    ast.IfExp: "conditional expressions (x if c else y) are not allowed",
    **dict.fromkeys(
        (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp),
        "comprehensions are not allowed",
    ),
    **dict.fromkeys((ast.JoinedStr, ast.FormattedValue), "f-strings are not allowed"),
    **dict.fromkeys((ast.Await, ast.Yield, ast.YieldFrom), "await/yield are not allowed"),
}
# Leaf singletons (Load, And, Eq, ...) say nothing about size; only real nodes are counted.
_LEAVES = (ast.expr_context, ast.boolop, ast.cmpop, ast.unaryop, ast.operator)

_Outcomes = Mapping[str, "TaskOutcome"]
_Run = Callable[[_Outcomes], Any]


class ConditionError(ValueError):
    """A condition that is not allowed or cannot be parsed.

    The message quotes the offending part.
    """


class ConditionEvaluationError(ConditionError):
    """A checked condition met data it cannot handle (missing key, bad comparison, ...)."""


@dataclass(frozen=True)
class TaskOutcome:
    """What a condition can see of one upstream task."""

    status: str  # e.g. "completed", "failed", "skipped", "upstream_failed", "timed_out"
    result: Any = None  # JSON data the task returned
    error: str | None = None
    duration: float | None = None  # seconds


def _snippet(text: str) -> str:
    """``text`` cut to a length that keeps error messages (and logs) readable."""
    return text if len(text) <= _SNIPPET_LENGTH else text[: _SNIPPET_LENGTH - 3] + "..."


def _is_literal(node: ast.expr, kinds: tuple[type, ...] = (int, float)) -> bool:
    """Whether ``node`` is a constant of ``kinds``, never bool (``-True``, ``x[True]``: typos)."""
    value = getattr(node, "value", None)
    return (
        isinstance(node, ast.Constant) and isinstance(value, kinds) and not isinstance(value, bool)
    )


def _check_brackets(source: str) -> None:
    """Refuse deep bracket nesting before parsing: parentheses leave no trace in the AST."""
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.OP and token.string in ("(", "[", "{"):
                depth += 1
                if depth > MAX_DEPTH:
                    line, column = token.start
                    raise ConditionError(
                        f"brackets are nested more than {MAX_DEPTH} deep "
                        f"(line {line}, column {column + 1})"
                    )
            elif token.type == tokenize.OP and token.string in (")", "]", "}"):
                depth -= 1
    except (tokenize.TokenError, SyntaxError):
        return  # malformed text: ast.parse reports it with a better message


def _parse(source: str) -> ast.Expression:
    """``ast.parse`` in eval mode, with every way it can fail turned into a ConditionError."""
    try:
        return ast.parse(source, mode="eval")
    except SyntaxError as exc:
        lines = source.splitlines()
        line = lines[exc.lineno - 1] if exc.lineno and 0 < exc.lineno <= len(lines) else source
        # Quote from the error position on: that is where the reader should look.
        quoted = _snippet(line[max((exc.offset or 1) - 1, 0) :].strip() or line.strip())
        raise ConditionError(
            f"cannot parse condition ({exc.msg}) at line {exc.lineno}, column {exc.offset}: "
            f"`{quoted}`"
        ) from exc
    except (RecursionError, MemoryError) as exc:
        raise ConditionError(
            f"condition is nested too deeply to parse: `{_snippet(source)}`"
        ) from exc
    except ValueError as exc:  # null bytes on Pythons before 3.11.4 (refused earlier anyway)
        raise ConditionError(f"cannot parse condition ({exc}): `{_snippet(source)}`") from exc


def _check_size(source: str, tree: ast.Expression) -> None:
    """Bound node count and depth, iteratively, before any recursive walk of the tree."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConditionError(f"condition has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            where = _snippet(ast.get_source_segment(source, node) or type(node).__name__)
            raise ConditionError(f"condition is nested more than {MAX_DEPTH} deep: `{where}`")
        children = ast.iter_child_nodes(node)
        stack.extend((child, depth + 1) for child in children if not isinstance(child, _LEAVES))


class _Builder:
    """The whitelist: checks each node and turns it into a closure that evaluates it.

    Recursion here, and in the closures, is bounded by MAX_DEPTH, checked beforehand.
    """

    def __init__(self, source: str, allowed_names: Collection[str] | None) -> None:
        self.source = source
        self.allowed = None if allowed_names is None else frozenset(allowed_names)
        self.names: set[str] = set()

    def where(self, node: ast.AST) -> str:
        return _snippet(ast.get_source_segment(self.source, node) or ast.unparse(node))

    def refuse(self, node: ast.AST, reason: str) -> ConditionError:
        return ConditionError(f"{reason}: `{self.where(node)}`")

    def build(self, node: ast.expr) -> _Run:
        handlers: dict[type[ast.expr], Callable[[Any], _Run]] = {
            ast.BoolOp: self.bool_op,
            ast.UnaryOp: self.unary_op,
            ast.Compare: self.compare,
            ast.Constant: self.constant,
            ast.List: self.constant,
            ast.Tuple: self.constant,
            ast.Set: self.constant,
            ast.Attribute: self.attribute,
            ast.Subscript: self.subscript,
            ast.Name: self.bare_name,
        }
        handler = handlers.get(type(node))
        if handler is None:
            default = f"{type(node).__name__} expressions are not allowed"
            raise self.refuse(node, _REFUSED.get(type(node), default))
        return handler(node)

    def truth(self, node: ast.expr) -> Callable[[_Outcomes], bool]:
        inner, where = self.build(node), self.where(node)

        def run(outcomes: _Outcomes) -> bool:
            value = inner(outcomes)
            try:
                return bool(value)
            except (TypeError, ValueError) as exc:  # exotic objects inside a result
                raise ConditionEvaluationError(f"no truth value ({exc}) in `{where}`") from exc

        return run

    def bool_op(self, node: ast.BoolOp) -> _Run:
        parts = [self.truth(value) for value in node.values]
        # all()/any() over generators short-circuit exactly like `and`/`or`, returning bool.
        if isinstance(node.op, ast.And):
            return lambda outcomes: all(part(outcomes) for part in parts)
        return lambda outcomes: any(part(outcomes) for part in parts)

    def unary_op(self, node: ast.UnaryOp) -> _Run:
        if isinstance(node.op, ast.Not):
            inner = self.truth(node.operand)
            return lambda outcomes: not inner(outcomes)
        return self.constant(node)

    def literal(self, node: ast.expr, *, display: bool = True) -> Any:
        """The value of a constant, a display of constants, or `-` on a number literal."""
        if display and isinstance(node, ast.List | ast.Tuple | ast.Set):
            if len(node.elts) > MAX_DISPLAY_ELEMENTS:
                limit = f"displays are limited to {MAX_DISPLAY_ELEMENTS} elements"
                raise self.refuse(node, limit)
            kind = {ast.List: list, ast.Tuple: tuple, ast.Set: frozenset}[type(node)]
            return kind(self.literal(element, display=False) for element in node.elts)
        if isinstance(node, ast.UnaryOp):
            if not (isinstance(node.op, ast.USub) and _is_literal(node.operand)):
                raise self.refuse(node, "arithmetic is not allowed (only `-` on a number literal)")
            number: float = self.literal(node.operand)
            return -number
        if not isinstance(node, ast.Constant):
            raise self.refuse(node, "list/tuple/set displays may only hold constants")
        value = node.value
        if isinstance(value, str) and len(value) > MAX_STR_LENGTH:
            raise self.refuse(node, f"strings are limited to {MAX_STR_LENGTH} characters")
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise self.refuse(node, "integers are limited to 10**18 in absolute value")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.refuse(node, "numbers must be finite")
        if not (value is None or isinstance(value, str | int | float)):
            raise self.refuse(node, f"constants of type {type(value).__name__} are not allowed")
        return value

    def constant(self, node: ast.expr) -> _Run:
        value = self.literal(node)
        return lambda _outcomes: value

    def compare(self, node: ast.Compare) -> _Run:
        operands = [node.left, *node.comparators]
        for index, op in enumerate(node.ops):
            # Identity of JSON values is an accident of interning; only singletons are safe.
            pair = operands[index : index + 2]
            if isinstance(op, ast.Is | ast.IsNot) and not any(
                isinstance(side, ast.Constant)
                and (side.value is None or isinstance(side.value, bool))
                for side in pair
            ):
                raise self.refuse(node, "`is` may only compare with None, True or False")
        parts = [self.build(operand) for operand in operands]
        links = [_COMPARE[type(op)] for op in node.ops]
        where = self.where(node)

        def run(outcomes: _Outcomes) -> bool:
            left = parts[0](outcomes)
            for (symbol, function), part in zip(links, parts[1:], strict=True):
                right = part(outcomes)
                try:
                    holds = bool(function(left, right))
                except (TypeError, ValueError, RecursionError) as exc:
                    shown = f"{_snippet(repr(left))} {symbol} {_snippet(repr(right))}"
                    message = f"cannot evaluate {shown} ({exc}) in `{where}`"
                    raise ConditionEvaluationError(message) from exc
                if not holds:
                    return False  # a chain stops at its first false link, as in Python
                left = right
            return True

        return run

    def name(self, node: ast.Name) -> str:
        if node.id.startswith("_"):
            raise self.refuse(node, "names starting with '_' are not allowed")
        if self.allowed is not None and node.id not in self.allowed:
            listed = ", ".join(sorted(self.allowed)) or "(none)"
            raise self.refuse(node, f"unknown task (allowed names: {listed})")
        self.names.add(node.id)
        return node.id

    def bare_name(self, node: ast.Name) -> _Run:
        self.name(node)
        raise self.refuse(node, "a task name is not a value; use one of its fields, e.g. .status")

    def attribute(self, node: ast.Attribute) -> _Run:
        if node.attr.startswith("__"):
            raise self.refuse(node, "dunder attributes are not allowed")
        if node.attr not in OUTCOME_FIELDS:
            fields = ", ".join(f".{name}" for name in OUTCOME_FIELDS)
            raise self.refuse(node, f"attribute .{node.attr} is not allowed (only {fields})")
        if not isinstance(node.value, ast.Name):
            raise self.refuse(node, "attributes are only allowed on a task name")
        task, attr, where = self.name(node.value), node.attr, self.where(node)

        def run(outcomes: _Outcomes) -> Any:
            try:
                outcome = outcomes[task]
            except KeyError:
                raise ConditionEvaluationError(
                    f"task {task!r} has no outcome in `{where}`"
                ) from None
            return getattr(outcome, attr)  # attr is one of OUTCOME_FIELDS, checked above

        return run

    def subscript(self, node: ast.Subscript) -> _Run:
        inner = (
            self.build(node.value)
            if isinstance(node.value, ast.Attribute | ast.Subscript)
            else None
        )
        if inner is None or getattr(node.value, "attr", "result") != "result":
            raise self.refuse(node, "only <task>.result (or an item of it) can be subscripted")
        if isinstance(node.slice, ast.Slice):
            raise self.refuse(node, "slices are not allowed")
        index = node.slice.operand if isinstance(node.slice, ast.UnaryOp) else node.slice
        if not (_is_literal(index, (int,)) or _is_literal(index, (str,))):
            raise self.refuse(node, "subscript index must be a constant string or integer")
        key, where = self.literal(node.slice), self.where(node)

        def run(outcomes: _Outcomes) -> Any:
            container = inner(outcomes)
            try:
                if not isinstance(container, Mapping | Sequence):
                    raise TypeError(f"{type(container).__name__} cannot be indexed")
                return container[key]
            except KeyError:
                problem = "key not found"
            except IndexError:
                problem = f"index out of range ({len(container)} items)"
            except TypeError as exc:  # e.g. a str key on a list
                problem = str(exc)
            raise ConditionEvaluationError(f"{problem}: {_snippet(repr(key))} in `{where}`")

        return run


@dataclass(frozen=True)
class Condition:
    """A parsed, checked condition; evaluate() is safe to call on untrusted-but-checked input."""

    source: str
    names: frozenset[str]
    _run: Callable[[_Outcomes], bool] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, source: str, allowed_names: Collection[str] | None = None) -> Condition:
        """Parse and check ``source``; with ``allowed_names``, refuse any other task name."""
        # The length check comes first so a huge text never reaches the tokenizer or parser.
        if len(source) > MAX_SOURCE_LENGTH:
            raise ConditionError(
                f"condition is {len(source)} characters; the limit is {MAX_SOURCE_LENGTH}"
            )
        if "\x00" in source:
            raise ConditionError(f"null bytes are not allowed (position {source.index(chr(0))})")
        # Leading whitespace (e.g. from YAML block scalars) would be an indentation error.
        text = source.strip()
        if not text:
            raise ConditionError("condition is empty")
        _check_brackets(text)
        tree = _parse(text)
        _check_size(text, tree)
        builder = _Builder(text, allowed_names)
        run = builder.truth(tree.body)
        return cls(source=text, names=frozenset(builder.names), _run=run)

    def __reduce__(self) -> tuple[Callable[[str], Condition], tuple[str]]:
        """Pickle as the source text: the evaluating closures cannot be pickled, the text can."""
        return (Condition.parse, (self.source,))

    def evaluate(self, outcomes: Mapping[str, TaskOutcome]) -> bool:
        """The condition's truth over ``outcomes``; data problems raise ConditionEvaluationError."""
        return self._run(outcomes)


def parse_condition(source: str, allowed_names: Collection[str] | None = None) -> Condition:
    """Shorthand for :meth:`Condition.parse`."""
    return Condition.parse(source, allowed_names)
