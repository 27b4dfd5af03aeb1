"""Fail when modules of a package import each other in a cycle (DESIGN.md section 2: "no import
cycle"), listing each cycle with the lines that close it.

Imports inside functions count, and so do ``if TYPE_CHECKING:`` imports: grimp reads every
import statement of a module. A cycle hidden by a late import is still two modules that cannot
be understood, tested or moved one without the other.

import-linter's own ``acyclic_siblings`` contract is not used: it squashes each subpackage into
one node, so it also flags packages that depend on each other through modules that do not form
a cycle (``schedulers/`` holds both the beat scheduler the app configures and the seed facade
that imports the app). This checker works on modules, as the design states the rule.

Usage: ``python tools/check_import_cycles.py [PACKAGE]`` (default ``personal_assistant.workers``);
exit 0 and no output when there is no cycle, exit 1 and one block per cycle otherwise.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Mapping
from itertools import pairwise

import grimp

DEFAULT_PACKAGE = "personal_assistant.workers"


def import_edges(graph: grimp.ImportGraph, package: str) -> dict[str, set[str]]:
    """Each module of ``package`` (itself included) mapped to the modules of ``package`` it
    imports directly."""
    prefix = package + "."
    modules = {m for m in graph.modules if m == package or m.startswith(prefix)}
    return {
        module: {m for m in graph.find_modules_directly_imported_by(module) if m in modules}
        for module in modules
    }


def strongly_connected(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted, in sorted order
    (Tarjan's algorithm, iterative: a deep import chain must not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def shortest_cycle(edges: Mapping[str, Iterable[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, staying inside the component:
    ``[a, b, ..., a]``."""
    start = component[0]
    members = set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(edges[node]):
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start} in its own strongly connected component")


def describe(graph: grimp.ImportGraph, edges: Mapping[str, Iterable[str]]) -> list[str]:
    """One block per cycle: its modules, then one chain through them with the importing lines."""
    blocks = []
    for component in strongly_connected(edges):
        cycle = shortest_cycle(edges, component)
        lines = [f"import cycle among {len(component)} modules: {', '.join(component)}"]
        for importer, imported in pairwise(cycle):
            details = graph.get_import_details(importer=importer, imported=imported)
            where = ", ".join(f"l.{d['line_number']}" for d in details)
            lines.append(f"  {importer} -> {imported} ({where})")
        blocks.append("\n".join(lines))
    return blocks


def main(argv: list[str]) -> int:
    """Print every import cycle of the package named in ``argv`` (or the default); 1 if any."""
    package = argv[0] if argv else DEFAULT_PACKAGE
    # No cache directory: the graph of this package builds in well under a second.
    graph = grimp.build_graph(package.split(".")[0], cache_dir=None)
    blocks = describe(graph, import_edges(graph, package))
    if blocks:
        print("\n\n".join(blocks))
        print(f"\n{len(blocks)} import cycle(s) in {package}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
