"""The project's import graph read from the source (function-level imports included): for architecture
tests."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("tasks", "containers")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported_names(path: Path, modules: set[str] | frozenset = frozenset()) -> set[str]:
    """Every module an import statement anywhere in the file names (absolute imports). `from X import y`
    names X.y when that is one of `modules` (X itself only as a parent, like any submodule import), else X."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            names.update(submodules)
            if len(submodules) < len(node.names):
                names.add(node.module)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file)."""
    files = module_files()
    graph = {}
    for name, path in files.items():
        graph[name] = {n for n in imported_names(path, set(files)) if n in files and n != name}
    return graph


def external_imports() -> dict[str, set[str]]:
    """Module -> the top-level names of third-party packages it imports (anywhere in the file)."""
    files = module_files()
    return {
        name: {n.split(".")[0] for n in imported_names(path) if n.split(".")[0] not in PACKAGES}
        for name, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for succ in graph.get(node, ()):
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return seen
