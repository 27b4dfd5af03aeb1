"""Assertions about dependency graphs, shared by the graph and scheduler tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from personal_assistant.workers.workflows.dag import DependencyGraph


def edges_of(graph: DependencyGraph) -> list[tuple[str, str]]:
    """Every edge ``(upstream, downstream)`` of ``graph``."""
    return [(up, name) for name in graph.names() for up in graph.upstreams(name)]


def assert_order_respects(order: Sequence[str], edges: Iterable[tuple[str, str]]) -> None:
    """Each name once in ``order``, and every upstream before its downstream."""
    position = {name: i for i, name in enumerate(order)}
    assert len(position) == len(order), "a name appears twice in the order"
    broken = [(up, down) for up, down in edges if position[up] >= position[down]]
    assert broken == []


def assert_is_cycle(path: Sequence[str], edges: Iterable[tuple[str, str]]) -> None:
    """``path`` starts and ends on the same node and follows real edges."""
    edge_set = set(edges)
    assert len(path) >= 2
    assert path[0] == path[-1]
    for up, down in itertools.pairwise(path):
        assert (up, down) in edge_set, f"{up} -> {down} is not an edge"
