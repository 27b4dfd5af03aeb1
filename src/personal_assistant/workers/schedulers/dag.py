"""A dependency graph that stays acyclic and topologically ordered as edges are added.

Every edge insertion keeps a topological order up to date with the Pearce-Kelly algorithm
(Pearce & Kelly, "A dynamic topological sort algorithm for directed acyclic graphs", 2006): an
edge that already agrees with the order costs O(1); otherwise only the region between its two
ends is searched and reordered. So adding 100,000 dependencies one by one stays near-linear,
a cycle is found the moment its closing edge is added (with its path), and the execution order
is read off in O(n log n) without a separate sort of the graph.

Edges point from upstream to downstream: ``a -> b`` means b depends on a (a runs first).
Nodes are small integers internally; names are mapped once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class CycleError(ValueError):
    """Adding the dependency would close a cycle; ``cycle`` is its path, first node repeated."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        message = "dependency cycle: " + " -> ".join(self.cycle)
        if len(self.cycle) == 2:
            message += " (a task cannot depend on itself)"
        super().__init__(message)


class DependencyGraph:
    """Directed acyclic graph of task names with an always-valid topological order."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        self._ups: list[list[int]] = []
        self._downs: list[list[int]] = []
        # _ord[node] is the node's position key in the topological order (unique integers).
        self._ord: list[int] = []
        self._next_ord = 0

    # -- nodes --------------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self._names)

    def add_node(self, name: str) -> int:
        """The id of ``name``, adding it (last in the order) if it is new."""
        node = self._index.get(name)
        if node is None:
            node = len(self._names)
            self._index[name] = node
            self._names.append(name)
            self._ups.append([])
            self._downs.append([])
            # A new node has no edges yet, so the end of the order is a valid place for it.
            self._ord.append(self._next_ord)
            self._next_ord += 1
        return node

    def upstreams(self, name: str) -> list[str]:
        """Names ``name`` depends on directly."""
        return [self._names[u] for u in self._ups[self._index[name]]]

    def downstreams(self, name: str) -> list[str]:
        """Names that depend directly on ``name``."""
        return [self._names[d] for d in self._downs[self._index[name]]]

    def names(self) -> list[str]:
        """All names, in insertion order."""
        return list(self._names)

    # -- edges --------------------------------------------------------------------------------
    def set_upstreams(self, name: str, upstreams: Iterable[str]) -> None:
        """Make ``name`` depend on exactly ``upstreams``; all or nothing.

        Raises CycleError (the graph unchanged, new names not added) when that closes a cycle.
        """
        wanted = list(dict.fromkeys(upstreams))  # de-duplicate, keep the caller's order
        if name in wanted:
            raise CycleError([name, name])
        created = [n for n in (name, *wanted) if n not in self._index]
        node = self.add_node(name)
        old = list(self._ups[node])
        for up in old:
            self._remove_edge(up, node)
        added: list[int] = []
        try:
            for up_name in wanted:
                up = self.add_node(up_name)
                self._add_edge(up, node)
                added.append(up)
        except CycleError:
            for up in added:
                self._remove_edge(up, node)
            for up in old:  # the old edges were acyclic together: re-adding them cannot fail
                self._add_edge(up, node)
            self._forget(created)
            raise

    def _remove_edge(self, up: int, down: int) -> None:
        self._ups[down].remove(up)
        self._downs[up].remove(down)

    def _forget(self, created: list[str]) -> None:
        # Nodes made by a failed call are the newest ones and have no edges left: pop them.
        for name in reversed(created):
            node = self._index.get(name)
            if node is not None and node == len(self._names) - 1:
                del self._index[name]
                self._names.pop()
                self._ups.pop()
                self._downs.pop()
                self._ord.pop()

    def _add_edge(self, up: int, down: int) -> None:
        ord_ = self._ord
        lower, upper = ord_[down], ord_[up]
        if lower > upper:  # already in order: the common case when tasks arrive upstream first
            self._ups[down].append(up)
            self._downs[up].append(down)
            return
        # Forward search from `down` among nodes ordered before `up`: reaching `up` is a cycle.
        forward: list[int] = []
        parent: dict[int, int] = {down: -1}
        stack = [down]
        while stack:
            node = stack.pop()
            forward.append(node)
            for nxt in self._downs[node]:
                if nxt == up:
                    raise CycleError(self._cycle_path(up, node, parent))
                if nxt not in parent and ord_[nxt] < upper:
                    parent[nxt] = node
                    stack.append(nxt)
        # Backward search from `up` among nodes ordered after `down`.
        backward: list[int] = []
        seen = {up}
        stack = [up]
        while stack:
            node = stack.pop()
            backward.append(node)
            for prev in self._ups[node]:
                if prev not in seen and ord_[prev] > lower:
                    seen.add(prev)
                    stack.append(prev)
        # Reorder: the backward set (sorted) takes the smallest slots, then the forward set.
        backward.sort(key=ord_.__getitem__)
        forward.sort(key=ord_.__getitem__)
        slots = sorted(ord_[n] for n in (*backward, *forward))
        for node, slot in zip((*backward, *forward), slots, strict=True):
            ord_[node] = slot
        self._ups[down].append(up)
        self._downs[up].append(down)

    def _cycle_path(self, up: int, last: int, parent: dict[int, int]) -> list[str]:
        # Path down -> ... -> last from the search tree, then the closing edges last -> up -> down.
        path = [last]
        while parent[path[-1]] != -1:
            path.append(parent[path[-1]])
        path.reverse()
        names = [self._names[up], *(self._names[n] for n in path), self._names[up]]
        return names

    # -- order --------------------------------------------------------------------------------
    def topological_order(self) -> list[str]:
        """Every name, each after all it depends on; the same graph built the same way gives
        the same order."""
        names = self._names
        return [names[n] for n in sorted(range(len(names)), key=self._ord.__getitem__)]
