"""The dependency graph: stays acyclic, keeps a valid order as edges arrive, names cycles."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from personal_assistant.workers.workflows.dag import CycleError, DependencyGraph
from tests.support.graphs import assert_is_cycle, assert_order_respects, edges_of


def reaches(graph: DependencyGraph, start: str, goal: str) -> bool:
    """Whether a path of edges leads from ``start`` down to ``goal``."""
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for down in graph.downstreams(node):
            if down not in seen:
                seen.add(down)
                stack.append(down)
    return False


def random_upstreams(n: int, seed: int, max_ups: int = 3) -> dict[str, list[str]]:
    """A random DAG of ``n`` tasks: each depends on up to ``max_ups`` tasks before it in a
    hidden random order, so the tasks' names say nothing about the order."""
    rng = random.Random(seed)
    hidden = [f"t{i}" for i in range(n)]
    rng.shuffle(hidden)
    upstreams: dict[str, list[str]] = {}
    for i, name in enumerate(hidden):
        count = rng.randint(0, min(max_ups, i))
        upstreams[name] = list(dict.fromkeys(hidden[rng.randrange(i)] for _ in range(count)))
    return upstreams


def snapshot(graph: DependencyGraph) -> dict[str, Any]:
    """Everything observable about ``graph``."""
    return {
        "names": graph.names(),
        "order": graph.topological_order(),
        "upstreams": {name: graph.upstreams(name) for name in graph.names()},
        "downstreams": {name: graph.downstreams(name) for name in graph.names()},
    }


class CountingLists(list[list[int]]):
    """Adjacency lists that count how often a node's list is read: the graph's work."""

    def __init__(self, lists: Iterable[list[int]] = ()) -> None:
        super().__init__(lists)
        self.reads = 0

    def __getitem__(self, index: Any) -> Any:
        self.reads += 1
        return super().__getitem__(index)


def counted(graph: DependencyGraph) -> tuple[CountingLists, CountingLists]:
    """Swap ``graph``'s adjacency lists for counting ones; return them."""
    ups, downs = CountingLists(graph._ups), CountingLists(graph._downs)
    graph._ups, graph._downs = ups, downs
    return ups, downs


# --- nodes and edges ------------------------------------------------------------------------


def test_a_name_added_twice_is_one_node() -> None:
    graph = DependencyGraph()
    first = graph.add_node("a")
    assert graph.add_node("a") == first
    assert len(graph) == 1
    assert "a" in graph
    assert "b" not in graph


def test_set_upstreams_adds_the_task_and_its_upstreams_with_both_directions_of_edge() -> None:
    graph = DependencyGraph()
    graph.set_upstreams("c", ["a", "b"])
    assert graph.upstreams("c") == ["a", "b"]
    assert graph.downstreams("a") == ["c"]
    assert graph.downstreams("b") == ["c"]
    assert graph.upstream_count("c") == 2
    assert set(graph.names()) == {"a", "b", "c"}


def test_an_upstream_named_twice_is_one_edge() -> None:
    graph = DependencyGraph()
    graph.set_upstreams("b", ["a", "a"])
    assert graph.upstreams("b") == ["a"]
    assert graph.downstreams("a") == ["b"]


def test_set_upstreams_again_replaces_the_edges() -> None:
    graph = DependencyGraph()
    graph.set_upstreams("c", ["a"])
    graph.set_upstreams("c", ["b"])
    assert graph.upstreams("c") == ["b"]
    assert graph.downstreams("a") == []
    assert graph.downstreams("b") == ["c"]


def test_a_new_node_goes_last_in_the_order() -> None:
    graph = DependencyGraph()
    for name in ("x", "y", "z"):
        graph.add_node(name)
    assert graph.topological_order() == ["x", "y", "z"]


# --- order ----------------------------------------------------------------------------------


def test_an_edge_against_the_current_order_reorders_the_two_ends() -> None:
    graph = DependencyGraph()
    graph.add_node("b")
    graph.add_node("a")
    graph.set_upstreams("b", ["a"])
    assert graph.topological_order() == ["a", "b"]


def test_the_order_stays_valid_on_a_random_dag_whose_tasks_arrive_in_random_order() -> None:
    upstreams = random_upstreams(2_000, seed=7)
    names = list(upstreams)
    random.Random(8).shuffle(names)
    graph = DependencyGraph()
    for name in names:
        graph.set_upstreams(name, upstreams[name])
    edges = edges_of(graph)
    assert len(edges) == sum(map(len, upstreams.values()))
    assert_order_respects(graph.topological_order(), edges)


def test_the_order_stays_valid_when_a_chain_arrives_downstream_first() -> None:
    graph = DependencyGraph()
    for i in range(500):
        graph.set_upstreams(f"t{i}", [f"t{i + 1}"])
    assert graph.topological_order() == [f"t{i}" for i in reversed(range(501))]


def test_the_same_calls_give_the_same_order() -> None:
    upstreams = random_upstreams(500, seed=3)
    orders = []
    for _ in range(2):
        graph = DependencyGraph()
        for name, ups in reversed(upstreams.items()):
            graph.set_upstreams(name, ups)
        orders.append(graph.topological_order())
    assert orders[0] == orders[1]


# --- cycles ---------------------------------------------------------------------------------


def test_a_self_dependency_is_a_cycle_of_one_task() -> None:
    graph = DependencyGraph()
    with pytest.raises(CycleError) as caught:
        graph.set_upstreams("a", ["a"])
    assert caught.value.cycle == ["a", "a"]
    assert "a -> a" in str(caught.value)
    assert "cannot depend on itself" in str(caught.value)
    assert len(graph) == 0


def test_a_three_task_cycle_names_its_path() -> None:
    graph = DependencyGraph()
    graph.set_upstreams("b", ["a"])
    graph.set_upstreams("c", ["b"])
    with pytest.raises(CycleError) as caught:
        graph.set_upstreams("a", ["c"])
    cycle = caught.value.cycle
    assert_is_cycle(cycle, [*edges_of(graph), ("c", "a")])
    assert sorted(cycle[:-1]) == ["a", "b", "c"]
    assert " -> ".join(cycle) in str(caught.value)


def test_a_cycle_error_is_a_value_error() -> None:
    assert issubclass(CycleError, ValueError)


def test_every_edge_is_refused_exactly_when_it_closes_a_cycle_with_a_real_path() -> None:
    rng = random.Random(11)
    graph = DependencyGraph()
    for name, ups in random_upstreams(300, seed=12).items():
        graph.set_upstreams(name, ups)
    names = graph.names()
    refused = 0
    for _ in range(300):
        up, down = rng.sample(names, 2)
        closes = reaches(graph, down, up)
        before = snapshot(graph)
        try:
            graph.set_upstreams(down, [*graph.upstreams(down), up])
        except CycleError as exc:
            refused += 1
            assert closes, f"{up} -> {down} closes no cycle"
            assert_is_cycle(exc.cycle, [*edges_of(graph), (up, down)])
            assert snapshot(graph)["upstreams"] == before["upstreams"]
        else:
            assert not closes, f"{up} -> {down} closes a cycle"
        assert_order_respects(graph.topological_order(), edges_of(graph))
    assert refused > 0, "the sample never tried a closing edge"


def test_a_refused_call_adds_no_new_name() -> None:
    graph = DependencyGraph()
    graph.set_upstreams("b", ["a"])
    with pytest.raises(CycleError):
        graph.set_upstreams("a", ["brand_new", "b"])
    assert graph.names() == ["b", "a"]
    assert "brand_new" not in graph
    assert graph.upstreams("a") == []
    assert graph.downstreams("b") == []


def test_a_refused_replacement_keeps_the_old_upstreams() -> None:
    graph = DependencyGraph()
    graph.set_upstreams("b", ["a"])
    graph.set_upstreams("c", ["b"])
    before = snapshot(graph)
    with pytest.raises(CycleError):
        graph.set_upstreams("b", ["c"])
    assert snapshot(graph) == before


def test_a_refused_call_leaves_the_order_as_it_was() -> None:
    graph = DependencyGraph()
    graph.add_node("x")
    graph.add_node("y")
    graph.set_upstreams("a", ["x"])
    before = graph.topological_order()
    with pytest.raises(CycleError):
        graph.set_upstreams("x", ["y", "a"])  # y -> x reorders, then a -> x closes a cycle
    assert graph.topological_order() == before


# --- work -----------------------------------------------------------------------------------


def test_tasks_arriving_upstream_first_cost_constant_work_per_edge() -> None:
    upstreams = random_upstreams(20_000, seed=5)
    graph = DependencyGraph()
    ups, downs = counted(graph)
    for name, names_ups in upstreams.items():  # in the hidden order: upstreams first
        graph.set_upstreams(name, names_ups)
    edges = sum(map(len, upstreams.values()))
    # One read of the old upstreams per call and two appends per edge; no search.
    assert ups.reads + downs.reads <= len(upstreams) + 2 * edges


def test_a_chain_arriving_downstream_first_costs_near_linear_work() -> None:
    n = 2_000
    graph = DependencyGraph()
    ups, downs = counted(graph)
    for i in range(n):
        graph.set_upstreams(f"t{i}", [f"t{i + 1}"])
    assert ups.reads + downs.reads <= 20 * n


# --- bulk loading ---------------------------------------------------------------------------


def test_a_bulk_load_listed_downstream_first_gets_a_valid_order() -> None:
    upstreams = random_upstreams(5_000, seed=21)
    graph = DependencyGraph()
    graph.set_many_upstreams(dict(reversed(upstreams.items())))
    assert_order_respects(graph.topological_order(), edges_of(graph))
    assert len(edges_of(graph)) == sum(map(len, upstreams.values()))


def test_a_bulk_load_adds_tasks_named_only_as_upstreams() -> None:
    graph = DependencyGraph()
    graph.set_many_upstreams({"b": ["a"], "c": ["b", "z"]})
    assert set(graph.names()) == {"a", "b", "c", "z"}
    assert_order_respects(graph.topological_order(), edges_of(graph))


def test_a_bulk_load_with_a_cycle_names_it_and_changes_nothing() -> None:
    graph = DependencyGraph()
    graph.set_upstreams("b", ["a"])
    before = snapshot(graph)
    batch: Mapping[str, Sequence[str]] = {"c": ["b"], "d": ["c", "new"], "a": ["d"]}
    with pytest.raises(CycleError) as caught:
        graph.set_many_upstreams(batch)
    proposed = [(up, down) for down, ups in batch.items() for up in ups]
    assert_is_cycle(caught.value.cycle, [*edges_of(graph), *proposed])
    assert snapshot(graph) == before


def test_a_bulk_load_refuses_a_self_dependency() -> None:
    graph = DependencyGraph()
    with pytest.raises(CycleError, match="a -> a"):
        graph.set_many_upstreams({"b": [], "a": ["b", "a"]})
    assert len(graph) == 0
