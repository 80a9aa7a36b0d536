"""Check the one-way import layers of ``src/`` (run by ``make lint``; docs/architecture.md).

The layers are declared once, in ``pyproject.toml`` under ``[tool.spikeforge.layers]``: ``order`` lists
them from the top (entry points) to the bottom (the library); every other key names a layer and the
modules (dotted prefixes) in it. A module belongs to the layer of its longest matching prefix.

Every ``import`` statement of every module under ``src/`` counts, those inside functions and
``if TYPE_CHECKING:`` blocks included. Two rules:

1. a module imports nothing from a layer above its own;
2. the import graph between spikeforge's modules has no cycle.

    python scripts/check_layers.py [--root <checkout>]

prints one line per violation and exits 1 if there is any, else prints a one-line summary and exits 0.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_layers(root: Path) -> tuple[list[str], dict[str, str]]:
    """``(layers top to bottom, {module prefix: layer})`` from ``pyproject.toml``."""
    table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["spikeforge"]["layers"]
    order = list(table["order"])
    prefixes = {prefix: layer for layer in order for prefix in table[layer]}
    return order, prefixes


def module_files(src: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under ``src`` (packages by ``__init__``)."""
    modules = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            modules[".".join(parts)] = path
    return modules


def imported_names(path: Path, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``path``, at any depth; ``from a import b`` gives
    ``a.b`` (a submodule or a name in ``a``, resolved by the caller)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ``src/`` that importing ``name`` runs (the longest existing prefix), or None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def layer_of(module: str, prefixes: dict[str, str]) -> str | None:
    matches = [p for p in prefixes if module == p or module.startswith(p + ".")]
    return prefixes[max(matches, key=len)] if matches else None


def import_graph(src: Path) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """``(modules, {module: {imported module: first line}})`` over the modules of ``src``."""
    modules = module_files(src)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for line, name in imported_names(path, module, path.name == "__init__.py"):
            target = resolve(name, modules)
            if target is not None and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return modules, graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in components:  # a concrete path around the component, for the message
        members, start = set(comp), min(comp)
        path, seen, v = [start], {start}, start
        while True:
            w = next(w for w in sorted(graph[v]) if w in members)
            if w in seen:
                cycles.append([*path[path.index(w):], w])
                break
            path.append(w)
            seen.add(w)
            v = w
    return cycles


def check(root: Path) -> list[str]:
    """Every violation of the two rules, one line each (empty: the layers hold)."""
    order, prefixes = load_layers(root)
    src = root / "src"
    modules, graph = import_graph(src)
    problems = []
    for module, edges in sorted(graph.items()):
        mine = layer_of(module, prefixes)
        if mine is None:
            problems.append(f"{modules[module].relative_to(root)}: module {module} is in no layer; "
                            "add it to [tool.spikeforge.layers] in pyproject.toml")
            continue
        for target, line in sorted(edges.items()):
            theirs = layer_of(target, prefixes)
            if theirs is not None and order.index(theirs) < order.index(mine):
                problems.append(f"{modules[module].relative_to(root)}:{line}: {module} ({mine}) imports "
                                f"{target} ({theirs}), a layer above it")
    for cycle in find_cycles(graph):
        problems.append(f"import cycle: {' -> '.join(cycle)} (first import at "
                        f"{modules[cycle[0]].relative_to(root)}:{graph[cycle[0]][cycle[1]]})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check (default: this one)")
    args = parser.parse_args(argv)
    problems = check(args.root.resolve())
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    order, _ = load_layers(args.root.resolve())
    print(f"layers ok: {' > '.join(order)}, no import cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
