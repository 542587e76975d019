"""The import graph agrees with docs/design.md: every arrow points down, and there is no cycle.

Read from the source with `ast` (nothing is imported), every import counted: at module level, inside
functions, under `if TYPE_CHECKING:`. A package may import its own modules (the cycle check covers
those) and the layers below it, never one beside or above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

# Low to high; a module may import only from lower layers (and its own package).
LAYERS: list[tuple[str, ...]] = [
    ("edgeflow", "edgeflow.console", "edgeflow.progress", "edgeflow.jobenv"),
    ("edgeflow.rundir", "edgeflow.space"),
    ("edgeflow.config",),
    ("edgeflow.data",),
    ("edgeflow.model",),
    ("edgeflow.train",),
    ("edgeflow.export", "edgeflow.v1import"),
    ("edgeflow.nas",),
    ("edgeflow.report",),
    ("edgeflow.commands", "edgeflow.cli"),
    ("edgeflow.__main__",),
    ("jobs", "monitor"),
    ("bench",),
]
ROOTS = ("edgeflow", "jobs", "monitor", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def unit_of(module: str) -> str:
    """The layer entry a module belongs to: the longest listed prefix."""
    names = [n for layer in LAYERS for n in layer]
    best = max((n for n in names if module == n or module.startswith(n + ".")), key=len, default=None)
    assert best is not None, f"{module} is in no layer of the table; add it"
    return best


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from pkg import module` imports the module pkg.module when there is one.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ROOTS}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for root in ROOTS for p in (REPO / root).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for module, path in files.items():
        edges[module] = {name for name in imports_of(path, module) if name in files and name != module}
    return edges


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for module, targets in sorted(graph().items()):
        unit = unit_of(module)
        for target in sorted(targets):
            other = unit_of(target)
            if other == unit or target == "edgeflow":
                continue
            if layer_of(other) >= layer_of(unit):
                wrong.append(f"{module} -> {target} ({unit} may not import {other})")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_no_import_cycle_even_inside_functions() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            # A package's __init__ re-exporting its modules is the one allowed pair.
            real = [m for m in component if not any(o.startswith(m + ".") for o in component)]
            if len(component) > 1 and len(real) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_table_knows_every_module_and_the_checks_can_fail() -> None:
    edges = graph()
    assert len(edges) > 100
    for module in edges:
        unit_of(module)  # fails for a module outside the table
    # The checks see function-level imports: this one, hidden in a function, would point up.
    source = "def f():\n    from edgeflow.train import loop\n"
    tree = ast.parse(source)
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    assert layer_of(unit_of("edgeflow.train.loop")) > layer_of(unit_of("edgeflow.data.pack"))
