"""The library's layering, checked from the source: no framework calls in indextts_core, no cycles between its parts.

Every import of ``indextts_core`` (module level or inside a function) is an edge from the importing
part (a subpackage such as ``model``, or a top-level module such as ``config``) to the imported one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "indextts_core"


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def _part(path: Path) -> str:
    return path.relative_to(CORE).parts[0].removesuffix(".py")


def _graph() -> dict[str, dict[str, list[str]]]:
    """part -> imported part -> the files that import it."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(CORE.rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "indextts_core" and len(parts) > 1 and parts[1] != _part(path):
                edges[_part(path)][parts[1]].append(str(path.relative_to(CORE.parent)))
    return edges


def _cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected parts of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def test_the_library_never_imports_the_orchestration_layer():
    bad = [f"{path.relative_to(CORE.parent)}: {name}" for path in sorted(CORE.rglob("*.py"))
           for name in _imports(path) if name.split(".")[0] in {"prefect", "mlflow", "tasks", "flows"}]
    assert not bad, bad


def test_no_cycle_between_the_parts_of_the_library():
    edges = _graph()
    cycles = _cycles(edges)
    detail = [f"{a} -> {b} ({', '.join(sorted(set(edges[a][b]))[:3])})"
              for comp in cycles for a in comp for b in comp if b in edges.get(a, {})]
    assert not cycles, "import cycles between parts of indextts_core:\n" + "\n".join(detail)


def test_the_tasks_never_import_the_flows():
    """The layers point one way: flows -> tasks -> indextts_core (a task that needs a flow's helper is misplaced)."""
    tasks = CORE.parent / "tasks"
    bad = [f"{path.relative_to(CORE.parent)}: {name}" for path in sorted(tasks.rglob("*.py"))
           for name in _imports(path) if name.split(".")[0] == "flows"]
    assert not bad, bad
