"""The package's import graph, read from the source with `ast`: no import cycle between our modules
(imports inside functions and under TYPE_CHECKING count too), and LLaMA-Factory imported only by
`instraug_plugin/integrations/`."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

PACKAGE = "instraug_plugin"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
INTEGRATIONS = ROOT / "integrations"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) of every import statement in module `name` (file `path`), at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in MODULES else base), node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """Our module -> {our module it imports: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        edges = graph.setdefault(name, {})
        for target, line in _imports(path, name):
            if target in MODULES and target != name:
                edges.setdefault(target, line)
    return graph


def tangles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each member reaches every other)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle (first module repeated at the end) through each tangle."""
    return [_cycle_in(graph, set(component), component[0]) for component in tangles(graph)]


def _cycle_in(graph: dict[str, dict[str, int]], members: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected component (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt in members and nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")


def _describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50 and any(graph.values())  # the whole package was read
    problems = [f"{_describe(graph, _cycle_in(graph, set(members), members[0]))} (modules in this cycle: "
                f"{', '.join(members)})" for members in tangles(graph)]
    assert not problems, "import cycle(s):\n" + "\n".join(problems)


def test_llamafactory_is_imported_only_by_the_integration() -> None:
    found = [
        f"{path.relative_to(ROOT.parent)}:{line}: {target}"
        for name, path in MODULES.items() if INTEGRATIONS not in path.parents
        for target, line in sorted(set(_imports(path, name)), key=lambda item: item[1])
        if target == "llamafactory" or target.startswith("llamafactory.")
    ]
    assert any(INTEGRATIONS in path.parents for path in MODULES.values())
    assert not found, "LLaMA-Factory imported outside instraug_plugin/integrations/:\n" + "\n".join(found)


def test_the_checker_sees_cycles_and_relative_imports(tmp_path: Path) -> None:
    """The helpers themselves: a planted cycle is found and reported in order; imports in functions,
    under TYPE_CHECKING and relative ones resolve to our modules."""
    source = tmp_path / "x.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from . import config\n"
                      "def f():\n    from ...core.errors import InstrAugError\n    import llamafactory.data\n")
    name = "instraug_plugin.integrations.llamafactory.x"
    assert list(_imports(source, name)) == [
        ("typing", 1), ("instraug_plugin.integrations.llamafactory.config", 3),
        ("instraug_plugin.core.errors", 5), ("llamafactory.data", 6),
    ]
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7, "d": 1}, "d": {}, "e": {"e": 2}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert _describe(graph, ["a", "b", "c", "a"]) == "a (line 3) -> b (line 5) -> c (line 7) -> a"
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []
