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

import gc
from collections.abc import Iterable, Mapping, Sequence


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
        # Order keys of nodes placed *before* everything (upstreams seen first) count down.
        self._first_ord = 0

    # -- nodes --------------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self._names)

    def add_node(self, name: str, *, first: bool = False) -> int:
        """The id of ``name``, adding it if it is new: last in the order, or ``first``.

        A new node has no edges, so either end of the order is valid. Upstreams named for the
        first time go first: then their edge to the task already agrees with the order, and a
        chain added downstream-first costs O(1) per edge instead of a reorder each time.
        """
        node = self._index.get(name)
        if node is None:
            node = len(self._names)
            self._index[name] = node
            self._names.append(name)
            self._ups.append([])
            self._downs.append([])
            if first:
                self._first_ord -= 1
                self._ord.append(self._first_ord)
            else:
                self._ord.append(self._next_ord)
                self._next_ord += 1
        return node

    def upstreams(self, name: str) -> list[str]:
        """Names ``name`` depends on directly."""
        return [self._names[u] for u in self._ups[self._index[name]]]

    def upstream_count(self, name: str) -> int:
        """How many tasks ``name`` depends on directly."""
        return len(self._ups[self._index[name]])

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
        counters = (self._next_ord, self._first_ord)
        node = self.add_node(name)
        old = list(self._ups[node])
        for up in old:
            self._remove_edge(up, node)
        added: list[int] = []
        moved: list[tuple[int, int]] = []  # (node, its order key before) for every reorder
        try:
            for up_name in wanted:
                up = self.add_node(up_name, first=True)
                self._add_edge(up, node, moved)
                added.append(up)
        except CycleError:
            for up in added:
                self._remove_edge(up, node)
            # Put the order back as it was, so a refused call leaves no trace at all; the old
            # edges agree with it again, so re-adding them is O(1) each and cannot fail.
            for moved_node, key in reversed(moved):
                self._ord[moved_node] = key
            for up in old:
                self._add_edge(up, node)
            self._forget(created)
            self._next_ord, self._first_ord = counters
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

    def _add_edge(self, up: int, down: int, moved: list[tuple[int, int]] | None = None) -> None:
        """Add ``up -> down``, reordering if needed; ``moved`` collects (node, old key) to undo."""
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
            if moved is not None:
                moved.append((node, ord_[node]))
            ord_[node] = slot
        self._ups[down].append(up)
        self._downs[up].append(down)

    def _cycle_path(self, up: int, last: int, parent: dict[int, int]) -> list[str]:
        # Path down -> ... -> last from the search tree, then the closing edges last -> up -> down.
        path = [last]
        while parent[path[-1]] != -1:
            path.append(parent[path[-1]])
        path.reverse()
        return [self._names[up], *(self._names[n] for n in path), self._names[up]]

    # -- bulk --------------------------------------------------------------------------------
    def set_many_upstreams(self, upstreams_of: Mapping[str, Sequence[str]]) -> None:
        """Set the upstreams of many tasks at once; all or nothing (see _set_many_upstreams)."""
        # The load allocates a list per task and nothing cyclic: the cyclic collector's passes
        # over the growing heap are pure overhead (a fifth of the time at 10^5 tasks).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._set_many_upstreams(upstreams_of)
        finally:
            if was_enabled:
                gc.enable()

    def _set_many_upstreams(self, upstreams_of: Mapping[str, Sequence[str]]) -> None:
        """Set the upstreams of many tasks at once; all or nothing.

        The fast way to load a large workflow: when every upstream already comes earlier in the
        order (tasks listed upstream-first, as definitions usually are), the current order stays
        valid and one C-speed ``max`` per task proves it; otherwise one Kahn pass re-orders the
        whole graph. Raises CycleError with a cycle's path, leaving the graph unchanged.
        """
        index = dict(self._index)
        names = list(self._names)
        ups = [list(u) for u in self._ups]
        ord_ = list(self._ord)
        next_ord = self._next_ord
        # Register the tasks first, so most upstream look-ups below hit (a plain dict.get).
        for name in upstreams_of:
            if name not in index:
                index[name] = len(names)
                names.append(name)
                ups.append([])
                ord_.append(next_ord)
                next_ord += 1
        # On a fresh graph every node's order key is its id, so "all upstreams come earlier"
        # is just max(ids) < node, checked in C.
        identity = not self._names
        in_order = True
        for name, wanted in upstreams_of.items():
            try:
                ids = [index[u] for u in wanted]
            except KeyError:  # upstreams named only here: add them, last in the order
                in_order = False
                for up_name in wanted:
                    if up_name not in index:
                        index[up_name] = len(names)
                        names.append(up_name)
                        ups.append([])
                        ord_.append(next_ord)
                        next_ord += 1
                ids = [index[u] for u in wanted]
            node = index[name]
            unique = set(ids)
            if node in unique:
                raise CycleError([name, name])
            if len(unique) < len(ids):
                ids = list(dict.fromkeys(ids))
            ups[node] = ids
            if in_order and ids:
                if identity:
                    in_order = max(ids) < node
                else:
                    in_order = max(map(ord_.__getitem__, ids)) < ord_[node]
        if not in_order:
            ord_ = _kahn_order(names, ups)
        self._index, self._names, self._ups = index, names, ups
        self._downs = _downstream_lists(ups)
        self._ord, self._next_ord = ord_, max(next_ord, len(names))

    # -- order --------------------------------------------------------------------------------
    def topological_order(self) -> list[str]:
        """Every name, each after all it depends on; the same graph built the same way gives
        the same order."""
        names = self._names
        return [names[n] for n in sorted(range(len(names)), key=self._ord.__getitem__)]


def _downstream_lists(ups: list[list[int]]) -> list[list[int]]:
    """Invert upstream lists into downstream lists."""
    downs: list[list[int]] = [[] for _ in ups]
    for node, node_ups in enumerate(ups):
        for up in node_ups:
            downs[up].append(node)
    return downs


def _kahn_order(names: list[str], ups: list[list[int]]) -> list[int]:
    """Position of each node in a topological order (Kahn); CycleError if there is none."""
    downs = _downstream_lists(ups)
    indegree = list(map(len, ups))
    # Ready nodes in insertion order keep the result deterministic.
    order = [n for n, d in enumerate(indegree) if d == 0]
    for node in order:  # the list grows while we walk it
        for down in downs[node]:
            indegree[down] -= 1
            if indegree[down] == 0:
                order.append(down)
    if len(order) < len(names):
        raise CycleError(_find_cycle(names, ups, indegree))
    position = [0] * len(names)
    for slot, node in enumerate(order):
        position[node] = slot
    return position


def _find_cycle(names: list[str], ups: list[list[int]], indegree: list[int]) -> list[str]:
    """A cycle among the nodes Kahn could not order (each has an unordered upstream)."""
    stuck = {n for n, d in enumerate(indegree) if d > 0}
    node = next(iter(stuck))
    seen: dict[int, int] = {}
    path: list[int] = []
    while node not in seen:  # walk upstream edges; within `stuck` one always exists
        seen[node] = len(path)
        path.append(node)
        node = next(u for u in ups[node] if u in stuck)
    cycle = path[seen[node] :]
    cycle.reverse()  # upstream-first, as the execution arrows go
    return [names[n] for n in (*cycle, cycle[0])]
